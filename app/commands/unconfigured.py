"""`flask --app app` in a shell without the service's configuration.

`flask --app app --help` (and each command's `--help`) still lists every
command; a command that needs the service stops with the configuration's
problems, one line each naming the variable, and exit status 2, never a
traceback. (For the dev stack, `scripts/flask` loads its configuration.)
"""

from __future__ import annotations

import click
from flask import Flask

from app.commands import register_commands


class ConfigurationProblems(click.ClickException):
    exit_code = 2

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems

    def show(self, file=None) -> None:
        for line in self.problems:
            click.echo(f"Error: {line}", err=True)


class _Unconfigured:
    """Stands in for the services: any use raises `ConfigurationProblems`."""

    def __init__(self, problems: list[str]):
        self._problems = problems

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise ConfigurationProblems(self._problems)


def unconfigured_app(problems: list[str]) -> Flask:
    app = Flask("app")
    app.extensions["authflow"] = app.extensions["journey"] = _Unconfigured(problems)
    register_commands(app)

    @app.before_request
    def refuse():  # `flask --app app run` would otherwise serve an empty app
        return "not configured: run a `flask --app app` command to see why\n", 503

    return app
