"""The command group class of the operator commands: Flask's `AppGroup` (an
app context for each command), and Redis being unreachable is reported as
one clear line and exit status 1 rather than a traceback."""

from __future__ import annotations

import click
from flask.cli import AppGroup
from redis.exceptions import RedisError


class OpsGroup(AppGroup):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except RedisError as exc:
            raise click.ClickException(f"Redis cannot be reached: {exc}") from exc
