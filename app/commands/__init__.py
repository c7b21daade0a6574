"""Operator commands, run as `flask --app app <group> <command>`."""

from __future__ import annotations

from flask import Flask

from app.commands.deliveries import deliveries


def register_commands(app: Flask) -> None:
    app.cli.add_command(deliveries)
