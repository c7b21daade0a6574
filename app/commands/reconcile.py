"""`flask --app app reconcile`: reconciliation on demand.

    flask --app app reconcile COMPANY_ID [COMPANY_ID...]   one company now, whatever its deadline
    flask --app app reconcile --due                        what the scheduled job would do now
    flask --app app reconcile --rebuild-index              index companies stored before the index
                                                           existed (one SCAN of all companies)

Each report is printed as a JSON line. Exit status 1 if Codat could not be
asked (the message says why), 0 otherwise.
"""

from __future__ import annotations

import json

import click
from flask import current_app
from flask.cli import with_appcontext

from codat_authflow.journey.codat import CodatError
from codat_authflow.journey.reconcile import reconcile_company, reconcile_due
from codat_authflow.journey.service import Journey
from codat_authflow.storage.codec import decode_record


def _journey() -> Journey:
    return current_app.extensions["journey"]


def _stored_companies(journey: Journey):
    pattern = journey.store.keys.company("*")
    # Only the company documents (strings), not their event logs (lists).
    for key in journey.redis.scan_iter(match=pattern, count=500, _type="string"):
        raw = journey.redis.get(key)
        if raw is None:
            continue
        record = decode_record(raw)
        yield record.facts.company_id, record.state, record.updated_at


@click.command("reconcile")
@click.argument("company_ids", nargs=-1)
@click.option("--due", is_flag=True, help="Reconcile the companies past their deadline.")
@click.option("--rebuild-index", is_flag=True, help="Index companies stored before the index.")
@with_appcontext
def reconcile(company_ids: tuple[str, ...], due: bool, rebuild_index: bool) -> None:
    """Ask Codat what is true about companies and apply it to their state."""
    journey = _journey()
    if not (company_ids or due or rebuild_index):
        raise click.UsageError("give company ids, --due or --rebuild-index")
    if rebuild_index:
        count = journey.index.rebuild(_stored_companies(journey))
        click.echo(json.dumps({"indexed": count, "sizes": journey.index.sizes()}))
    failed = False
    for company_id in company_ids:
        try:
            report = reconcile_company(journey, company_id)
        except CodatError as exc:
            failed = True
            click.echo(
                json.dumps({"companyId": company_id, "error": exc.code, "message": exc.message}),
                err=True,
            )
            continue
        click.echo(json.dumps(report.to_json()))
    if due:
        click.echo(json.dumps(reconcile_due(journey)))
    if failed:
        raise SystemExit(1)
