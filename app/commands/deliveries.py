"""`flask --app app deliveries list-dead|replay`: inspect and re-send dead letters."""

from __future__ import annotations

from datetime import UTC, datetime

import click
from flask import current_app

from app.commands.groups import OpsGroup
from codat_authflow.bootstrap import Services
from codat_authflow.delivery.attempts import replay_dead_letters


def _context() -> Services:
    return current_app.extensions["authflow"]


def _epoch(value: datetime | None) -> float | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


_filters = [
    click.option("--subscription", "subscription_id", help="only this subscription id"),
    click.option("--company", "company_id", help="only this company id"),
    click.option("--from", "since", type=click.DateTime(), help="dead-lettered at or after (UTC)"),
    click.option("--to", "until", type=click.DateTime(), help="dead-lettered at or before (UTC)"),
]


def with_filters(command):
    for option in reversed(_filters):
        command = option(command)
    return command


@click.group(cls=OpsGroup)
def deliveries() -> None:
    """Downstream deliveries that exhausted their retries (dead letters).

    Only dead letters: a delivery still inside its retry schedule is not
    listed or replayed (see its attempts with GET /api/subscriptions/ID/deliveries).
    """


@deliveries.command("list-dead")
@with_filters
def list_dead(subscription_id, company_id, since, until) -> None:
    """List dead-lettered deliveries."""
    dead = _context().deliveries.dead_letters(
        subscription_id=subscription_id,
        company_id=company_id,
        since=_epoch(since),
        until=_epoch(until),
    )
    for delivery in dead:
        last = delivery.attempts[-1] if delivery.attempts else None
        click.echo(
            f"{delivery.id} {delivery.type} company={delivery.company_id} "
            f"subscription={delivery.subscription_id} attempts={len(delivery.attempts)} "
            f"last_error={last.error if last else '-'}"
        )
    click.echo(f"{len(dead)} dead-lettered deliveries")


@deliveries.command("replay")
@with_filters
def replay(subscription_id, company_id, since, until) -> None:
    """Send dead-lettered deliveries again, with a fresh retry schedule."""
    replayed = replay_dead_letters(
        _context(),
        subscription_id=subscription_id,
        company_id=company_id,
        since=_epoch(since),
        until=_epoch(until),
    )
    click.echo(f"replayed {len(replayed)} deliveries")
