"""`flask --app app codat webhooks setup|list`: Codat's webhook consumer for this service.

    codat webhooks setup --url https://<host>/webhooks/codat [--replace] [--json]
        one consumer for that URL, subscribed to exactly the event types this
        service acts on; run it again and nothing changes. A consumer for the
        URL with other event types is reported (exit 1), or replaced with
        --replace. Prints what to do with the endpoint's signing secret.
    codat webhooks list [--json]
        Codat's consumers, and how each differs from ours.

Exit status 1 when Codat cannot be asked or the set-up is not done.
"""

from __future__ import annotations

import json

import click
from flask import current_app

from app.commands.groups import OpsGroup
from codat_authflow.journey.codat import CodatClient, CodatError
from codat_authflow.journey.service import Journey
from codat_authflow.journey.webhook_consumers import (
    CODAT_WEBHOOK_SOURCE_IPS,
    NEXT_STEPS,
    SUBSCRIBED_EVENT_TYPES,
    ConsumerSetup,
    InvalidConsumerUrl,
    list_consumers,
    setup_consumer,
)


def _codat(operation: str) -> CodatClient:
    journey: Journey = current_app.extensions["journey"]
    try:
        return journey.require_codat(operation)
    except CodatError as exc:
        raise click.ClickException(exc.message) from exc


@click.group(cls=OpsGroup)
def codat() -> None:
    """Codat's side of this service."""


@codat.group(cls=OpsGroup)
def webhooks() -> None:
    """Codat's webhook consumer for POST /webhooks/codat."""


def _describe(setup: ConsumerSetup) -> None:
    consumer = setup.consumer or {}
    for deleted in setup.deleted:
        click.echo(f"deleted consumer {deleted} (other event types)")
    verb = "created" if setup.created else "already there:"
    click.echo(f"{verb} Codat webhook consumer {consumer.get('id')} for {setup.url}")
    click.echo(f"event types ({len(SUBSCRIBED_EVENT_TYPES)}): {', '.join(SUBSCRIBED_EVENT_TYPES)}")
    click.echo("")
    click.echo("Next: " + NEXT_STEPS)
    click.echo(
        "Only Codat sends to this URL: at your proxy, allow POST /webhooks/codat from "
        + " and ".join(CODAT_WEBHOOK_SOURCE_IPS)
        + " only (Codat's documented source addresses)."
    )


@webhooks.command("setup")
@click.option("--url", required=True, help="https://<this service>/webhooks/codat")
@click.option("--replace", is_flag=True, help="Replace a consumer for the URL that differs.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
def setup(url: str, replace: bool, as_json: bool) -> None:
    """Create Codat's webhook consumer for this service (once)."""
    client = _codat("create-webhook-consumer")
    try:
        result = setup_consumer(client, url, replace=replace)
    except InvalidConsumerUrl as exc:
        raise click.BadParameter(str(exc), param_hint="--url") from exc
    except CodatError as exc:
        raise click.ClickException(exc.message) from exc
    if as_json:
        click.echo(json.dumps({**result.to_json(), "nextSteps": NEXT_STEPS}))
    elif result.done:
        _describe(result)
    if result.done:
        return
    if not as_json:
        for consumer in result.conflicting:
            click.echo(
                f"consumer {consumer.get('id')} for {consumer.get('url')} differs from ours: "
                + json.dumps(result.to_json()["conflicting"][0]["differences"]),
                err=True,
            )
        click.echo("nothing changed; run again with --replace to replace it", err=True)
    raise SystemExit(1)


@webhooks.command("list")
@click.option("--json", "as_json", is_flag=True, help="A JSON array instead of text.")
def list_(as_json: bool) -> None:
    """Codat's webhook consumers, and how each differs from what this service needs."""
    client = _codat("list-webhook-consumers")
    try:
        consumers = list_consumers(client)
    except CodatError as exc:
        raise click.ClickException(exc.message) from exc
    if as_json:
        click.echo(json.dumps(consumers))
        return
    if not consumers:
        click.echo("no webhook consumers at Codat; create ours with: codat webhooks setup --url …")
    for consumer in consumers:
        state = "disabled" if consumer.get("disabled") else "enabled"
        match = "matches this service" if not consumer["differences"] else "differs"
        click.echo(f"{consumer.get('id')}  {consumer.get('url')}  {state}  {match}")
        click.echo(f"    event types: {', '.join(consumer.get('eventTypes') or []) or '(none)'}")
        for name, value in consumer["differences"].items():
            click.echo(f"    {name}: {value}")
