"""Operator commands, run as `flask --app app <group> <command>`."""

from __future__ import annotations

from flask import Flask

from app.commands.codat import codat
from app.commands.companies import companies
from app.commands.deliveries import deliveries
from app.commands.jobs import jobs
from app.commands.maintenance import funnel, history
from app.commands.reconcile import reconcile


def register_commands(app: Flask) -> None:
    app.cli.add_command(deliveries)
    app.cli.add_command(companies)
    app.cli.add_command(jobs)
    app.cli.add_command(history)
    app.cli.add_command(funnel)
    app.cli.add_command(reconcile)
    app.cli.add_command(codat)
