"""`flask --app app history purge` and `flask --app app funnel rebuild-index|show`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import click
from flask import current_app

from app.api.funnel import FunnelQueryError, compute, funnel_view, parse_query
from app.commands.groups import OpsGroup
from codat_authflow.bootstrap import Services
from codat_authflow.maintenance import RecordChanged, purge_history
from codat_authflow.storage.funnel import rebuild_index


def _context() -> Services:
    return current_app.extensions["authflow"]


@click.group(cls=OpsGroup)
def history() -> None:
    """Per-company history and event logs."""


@history.command("purge")
@click.option(
    "--older-than-days",
    "days",
    type=click.IntRange(min=1),
    required=True,
    help="Remove entries older than this many days.",
)
@click.option("--dry-run", is_flag=True, help="Count what would be removed, remove nothing.")
def purge(days: int, dry_run: bool) -> None:
    """Remove history entries, event-log entries and ignored events older than N days.

    Companies themselves (facts, state) stay. One SCAN over all companies."""
    cutoff = datetime.now(UTC) - timedelta(days=days)
    ctx = _context()
    try:
        report = purge_history(ctx.redis, ctx.store.keys, cutoff, dry_run=dry_run)
    except RecordChanged as exc:
        raise click.ClickException(str(exc)) from exc
    verb = "would remove" if dry_run else "removed"
    click.echo(
        f"{verb}, from before {cutoff.strftime('%Y-%m-%dT%H:%M:%SZ')}: "
        f"{report.history_entries} history entries and {report.event_log_entries} event-log "
        f"entries ({report.companies_changed} of {report.companies} companies), "
        f"{report.ignored_events} ignored events"
    )


@click.group(cls=OpsGroup)
def funnel() -> None:
    """The authorization funnel (also GET /api/funnel and /ops/funnel)."""


@funnel.command("show")
@click.option("--from", "since", help="ISO date or date-time (default: 30 days ago).")
@click.option("--to", "until", help="ISO date or date-time (default: now).")
@click.option("--source-type", help="Only companies with a connection of this sourceType.")
def show(since: str | None, until: str | None, source_type: str | None) -> None:
    """Print the funnel as JSON."""
    try:
        query = parse_query(
            {"from": since or "", "to": until or "", "sourceType": source_type or ""}
        )
    except FunnelQueryError as exc:
        raise click.BadParameter(str(exc)) from exc
    click.echo(json.dumps(funnel_view(query, compute(query)), indent=2))


@funnel.command("rebuild-index")
def rebuild() -> None:
    """Index companies stored before the funnel index existed (one SCAN)."""
    ctx = _context()
    added = rebuild_index(ctx.redis, ctx.store.keys)
    click.echo(f"indexed {added} companies that were missing from the funnel index")
