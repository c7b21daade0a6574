"""`flask --app app companies show|rebuild|erase COMPANY_ID`.

    companies show ID [--json]        state, connections, history, event log size
    companies rebuild ID [--write]    replay the event log through the state
                                      machine and report any difference
    companies erase ID [--local-only] [--yes]
                                      delete-company at Codat, then erase our data
                                      (tombstone); exit 2 if Codat refused

`rebuild` exits like `diff`: 0 when the replay gives the stored company, 1
when it differs (each difference printed; with --write the replayed facts
and state are stored), 2 on error (unknown company, Redis unreachable). A
full event log (COMPANY_EVENT_LOG_LIMIT) may have lost older events: --write
then refuses unless --force.
"""

from __future__ import annotations

import json

import click
from flask import current_app
from redis.exceptions import RedisError

from app.api.companies import company_view
from app.commands.groups import OpsGroup
from codat_authflow.bootstrap import Services
from codat_authflow.journey.codat import CodatError
from codat_authflow.journey.erasure import erase_company
from codat_authflow.journey.errors import JourneyError
from codat_authflow.maintenance import RecordChanged, replay, write_rebuilt


def _context() -> Services:
    return current_app.extensions["authflow"]


class Trouble(click.ClickException):
    exit_code = 2


@click.group(cls=OpsGroup)
def companies() -> None:
    """Inspect and rebuild stored companies."""


@companies.command("show")
@click.argument("company_id")
@click.option("--json", "as_json", is_flag=True, help="The API's JSON view instead of text.")
def show(company_id: str, as_json: bool) -> None:
    """A company's state, connections and history."""
    ctx = _context()
    try:
        record = ctx.store.get(company_id)
        events = ctx.store.events(company_id) if record is not None else []
    except RedisError as exc:
        raise click.ClickException(f"Redis cannot be reached: {exc}") from exc
    if record is None:
        raise click.ClickException(f"no company {company_id!r} is known")
    view = company_view(record, ctx.store.gate)
    if as_json:
        click.echo(json.dumps(view, indent=2))
        return
    click.echo(f"company   {view['companyId']}  {view['name'] or ''}".rstrip())
    click.echo(f"state     {view['state']}")
    click.echo(f"seen      first {view['firstSeenAt']}, updated {view['updatedAt']}")
    sync = view["initialSync"]
    click.echo(
        f"sync      started {sync['startedAt'] or '-'}, initial done {sync['completedAt'] or '-'}"
    )
    readiness = view["readiness"]
    gate = ",".join(readiness["readyDataTypes"]) or "any data type"
    click.echo(
        f"readiness {'met' if readiness['met'] else 'not met'} (needs {gate})"
        + (
            f", missing {','.join(readiness['missingDataTypes'])}"
            if readiness["missingDataTypes"]
            else ""
        )
    )
    if view["deletedAt"]:
        click.echo(f"deleted   {view['deletedAt']}")
    click.echo(f"connections ({len(view['connections'])}):")
    for c in view["connections"]:
        error = c["lastError"]
        click.echo(
            f"  {c['id']}  {c['status'] or '-'}  {c['sourceType'] or '-'}  "
            f"{c['platformName'] or c['platformKey'] or '-'}"
            + (
                f"  last error: {error['errorMessage'] or error['statusText'] or '-'}"
                if error
                else ""
            )
        )
        for d in c["dataTypes"]:
            failure = f", last error {d['lastErrorStatus']}" if d["lastErrorStatus"] else ""
            click.echo(
                f"    {d['dataType']}  {d['status'] or '-'} at {d['lastReadAt'] or '-'}"
                f"  (first complete {d['firstCompleteAt'] or '-'}{failure})"
            )
    click.echo(f"history ({len(view['history'])}, newest last):")
    for h in view["history"]:
        synthetic = " (synthetic)" if h.get("synthetic") else ""
        click.echo(
            f"  {h['at']}  {h['from']} -> {h['to']}  {h['eventType']} {h['eventId']}{synthetic}"
        )
    click.echo(f"event log: {len(events)} events (limit {ctx.store.event_log_limit})")


@companies.command("rebuild")
@click.argument("company_id")
@click.option("--write", is_flag=True, help="Store the replayed facts and state.")
@click.option("--force", is_flag=True, help="With --write: even if the event log is full.")
def rebuild(company_id: str, write: bool, force: bool) -> None:
    """Replay a company's stored events and compare with the stored company."""
    store = _context().store
    try:
        result = replay(store, company_id)
    except RedisError as exc:
        raise Trouble(f"Redis cannot be reached: {exc}") from exc
    if result is None:
        raise Trouble(f"no company {company_id!r} is known")
    click.echo(
        f"replayed {len(result.events)} logged events: state {result.outcome.state.value} "
        f"(stored: {result.record.state.value})"
    )
    if result.log_full:
        click.echo(
            f"warning: the event log is full ({store.event_log_limit} events); older events "
            "may have been dropped, and differences may come from that",
            err=True,
        )
    found = result.differences
    if not found:
        click.echo("no difference: the stored company is what its events give")
        return
    click.echo(f"{len(found)} difference(s):")
    for line in found:
        click.echo(f"  {line}")
    if write:
        if result.log_full and not force:
            raise Trouble("not written: the event log is full; add --force to write anyway")
        try:
            rebuilt = write_rebuilt(store, result.record, result.outcome)
        except RecordChanged as exc:
            raise Trouble(str(exc)) from exc
        click.echo(f"written: {company_id} is now {rebuilt.state.value} (no notification sent)")
    raise SystemExit(1)


@companies.command("erase")
@click.argument("company_id")
@click.option("--local-only", is_flag=True, help="Do not call Codat (already deleted there).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def erase(company_id: str, local_only: bool, yes: bool) -> None:
    """Erase a company: delete-company at Codat, then our data (a tombstone stays).

    The twin of DELETE /api/companies/<id>. Subscribers get company.revoked
    (companyDeleted: true) first. Prints the erasure as JSON.
    """
    if not yes:
        where = "here" if local_only else "at Codat and here"
        click.confirm(f"Erase company {company_id} {where}? This cannot be undone", abort=True)
    journey = current_app.extensions["journey"]
    try:
        erasure = erase_company(journey, company_id, ask_codat=not local_only)
    except (CodatError, JourneyError) as exc:
        raise Trouble(exc.message) from exc
    click.echo(json.dumps(erasure.to_json()))
