"""Reconciliation: heal a company whose webhooks never came.

A company that has sat in `linking`, `linked` or `syncing` longer than its
threshold (`RECONCILE_LINKING_AFTER_SECONDS`, `..._LINKED_...`,
`..._SYNCING_...`) is due. The job finds due companies through the
reconciliation index (`codat_authflow.storage.reconciliation`, one sorted set per state
ordered by deadline; never a scan of all companies), asks Codat what is true,
and feeds the answers to the state machine as synthetic events with
`source="reconciliation"` (ids `reconciliation:...`, `synthetic: true` in the
company's history):

1. list-connections: each connection whose status or details are news
   becomes a connection event; a connection we know that Codat no longer
   lists is checked with get-connection, and a 404 there records it deleted.
   A 404 for the company itself records the company deleted.
2. If the company is then `linked` or `syncing`: list-pull-operations (and,
   when that history says nothing about the linked connections,
   get-company-data-status) give, per connection and data type, the reads
   the webhooks would have reported (see `codat_authflow.journey.sync_evidence`), as
   synthetic `read.completed.initial` / `read.completed` events.
   A company still `syncing` because its initial reads failed has the failed
   data types re-queued at Codat (see `codat_authflow.journey.refresh`).
3. A company still `linking` whose pending connections all have expired Link
   URLs (one day) cannot progress on its own: it is reported (log line
   `reconcile.stuck`, the `{p}:reconcile:stuck` hash, `GET
   /api/reconciliation/stuck`) and taken out of the index, not polled
   forever. Creating a new connection puts it back.

A company confirmed still in its state restarts its clock, so it is checked
again one threshold later, not at every run.

Codat's rate limit (`journey.rate_limit`): a run does nothing while
reconciliation is paused (`client.rateLimit.reached` until its
`expiryDate`, or a 429's `Retry-After`), and stops at the first 429, leaving
that company and the rest of the batch due for the run after the pause.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import structlog

from codat_authflow.journey import rate_limit
from codat_authflow.journey.codat import CodatError, CodatNotFound, CodatRateLimited
from codat_authflow.journey.connections import link_expired
from codat_authflow.journey.events import (
    RECONCILIATION,
    company_deleted,
    connection_deleted,
    connection_observed,
    is_news,
    observations,
    reads_observed,
    snapshot_of,
)
from codat_authflow.journey.refresh import refresh_failed_reads
from codat_authflow.journey.service import Journey
from codat_authflow.journey.sync_evidence import (
    from_data_status,
    from_pull_operations,
    needs_data_status,
)
from codat_authflow.observability.metrics import record_reconciliation
from codat_authflow.storage.reconciliation import TRACKED_STATES
from state_machine import CodatEvent, CompanyState, merge_event

log = structlog.get_logger(__name__)

LOCK_SECONDS = 120


@dataclass
class ReconcileReport:
    company_id: str
    state_before: str | None = None
    state_after: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    sync_evidence: str | None = None
    refreshed: list[dict[str, Any]] = field(default_factory=list)
    stuck: dict[str, Any] | None = None
    skipped: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "companyId": self.company_id,
            "stateBefore": self.state_before,
            "stateAfter": self.state_after,
            "events": self.events,
            "syncEvidence": self.sync_evidence,
            "refreshed": self.refreshed,
            "stuck": self.stuck,
            "skipped": self.skipped,
        }


def thresholds(journey: Journey) -> dict[CompanyState, int]:
    s = journey.settings
    return {
        CompanyState.LINKING: s.reconcile_linking_after_seconds,
        CompanyState.LINKED: s.reconcile_linked_after_seconds,
        CompanyState.SYNCING: s.reconcile_syncing_after_seconds,
    }


def _describe(events: list[CodatEvent]) -> list[dict[str, Any]]:
    described = []
    for event in events:
        entry: dict[str, Any] = {"id": event.id, "type": event.type, "at": event.generated_at}
        if event.connection is not None:
            entry["connectionId"] = event.connection.id
            entry["status"] = event.connection.status
        if event.data_types:
            entry["connectionIds"] = list(event.read_connection_ids)
            entry["dataTypes"] = [
                {"connectionId": r.connection_id, "dataType": r.data_type, "status": r.status}
                for r in event.data_types
            ]
        described.append(entry)
    return described


def reconcile_company(journey: Journey, company_id: str) -> ReconcileReport:
    """Reconcile one company now, whatever its deadline. Raises `CodatError`
    if Codat cannot be asked; what was learnt before the failure is kept."""
    lock_key = journey.keys.reconcile_lock(company_id)
    token = str(uuid.uuid4())
    if not journey.redis.set(lock_key, token, nx=True, ex=LOCK_SECONDS):
        return ReconcileReport(company_id, skipped="already being reconciled")
    try:
        report = _reconcile(journey, company_id)
    except CodatRateLimited as exc:
        record_reconciliation(journey.redis, journey.keys.prefix, "rate_limited")
        journey.back_off(exc)
        raise
    except CodatError:
        record_reconciliation(journey.redis, journey.keys.prefix, "failed")
        raise
    finally:
        if journey.redis.get(lock_key) == token.encode():
            journey.redis.delete(lock_key)
    _count(journey, report)
    return report


def _count(journey: Journey, report: ReconcileReport) -> None:
    """The `authflow_reconciliation_actions` metric (codat_authflow/observability/metrics.py)."""
    actions = ["skipped" if report.skipped else "checked"]
    if report.state_after is not None and report.state_after != report.state_before:
        actions.append("changed")
    if report.stuck is not None:
        actions.append("stuck")
    actions += [f"event:{event['type']}" for event in report.events if "type" in event]
    actions += ["refresh"] * len(report.refreshed)
    for action in actions:
        record_reconciliation(journey.redis, journey.keys.prefix, action)


def _reconcile(journey: Journey, company_id: str) -> ReconcileReport:
    record = journey.store.get(company_id)
    if record is None:
        journey.index.remove(company_id)
        return ReconcileReport(company_id, skipped="unknown company")
    report = ReconcileReport(company_id, state_before=record.state.value)
    if record.facts.deleted_at is not None:
        journey.index.remove(company_id)
        report.state_after = record.state.value
        report.skipped = "company deleted"
        return report
    codat = journey.require_codat("list-connections")
    stamp, now = journey.stamp(), journey.now()

    try:
        live = codat.list_connections(company_id)
    except CodatNotFound:
        events = [company_deleted(company_id, source=RECONCILIATION, generated_at=stamp)]
        record = journey.apply(company_id, events) or record
        report.events += _describe(events)
        report.state_after = record.state.value
        _log(report)
        return report

    events = observations(company_id, record.facts, live, source=RECONCILIATION, generated_at=stamp)
    listed = {c["id"] for c in live}
    for known in record.facts.connections:
        if known.deleted_at is not None or known.id in listed:
            continue
        try:
            connection = codat.get_connection(company_id, known.id)
        except CodatNotFound:
            events.append(
                connection_deleted(
                    company_id, known.id, known=known, source=RECONCILIATION, generated_at=stamp
                )
            )
            continue
        if connection.get("id") != known.id:
            log.warning("reconcile.mismatched_answer", company_id=company_id, asked=known.id)
            continue
        if is_news(record.facts, snapshot_of(connection)):
            events.append(
                connection_observed(
                    company_id, connection, source=RECONCILIATION, generated_at=stamp
                )
            )
    record = journey.apply(company_id, events) or record
    report.events += _describe(events)

    if record.state in (CompanyState.LINKED, CompanyState.SYNCING):
        linked = [c.id for c in record.facts.connections if c.is_linked]
        evidence = from_pull_operations(codat.list_pull_operations(company_id), linked)
        if needs_data_status(evidence):
            evidence = from_data_status(
                codat.get_data_status(company_id), linked, observed_at=stamp
            )
        report.sync_evidence = evidence.basis
        reads = [
            e
            for e in reads_observed(company_id, evidence.reads, source=RECONCILIATION)
            if merge_event(record.facts, e) != record.facts
        ]
        record = journey.apply(company_id, reads) or record
        report.events += _describe(reads)

    if record.state == CompanyState.SYNCING:
        refreshed = refresh_failed_reads(journey, company_id, record.facts)
        report.refreshed += [r.to_json() for r in refreshed]

    report.state_after = record.state.value
    lifetime = journey.settings.link_url_lifetime_seconds
    pending = [c for c in live if c.get("status") == "PendingAuth"]
    if (
        record.state == CompanyState.LINKING
        and pending
        and all(link_expired(c, now, lifetime) for c in pending)
    ):
        report.stuck = {
            "companyId": company_id,
            "state": record.state.value,
            "reason": "link_expired",
            "message": (
                "every Link URL of this company has expired (they last one day) and no "
                "connection was authorized; create a new connection and send the user "
                "its linkUrl"
            ),
            "connections": [
                {
                    "connectionId": c["id"],
                    "platformName": c.get("platformName"),
                    "created": c.get("created"),
                }
                for c in pending
            ],
            "detectedAt": stamp,
        }
        journey.redis.hset(journey.keys.reconcile_stuck, company_id, json.dumps(report.stuck))
        journey.index.remove(company_id)
    else:
        journey.redis.hdel(journey.keys.reconcile_stuck, company_id)
        if record.state in TRACKED_STATES:
            journey.index.restart(company_id, record.state, now)
    _log(report)
    return report


def _log(report: ReconcileReport) -> None:
    if report.stuck is not None:
        log.warning(
            "reconcile.stuck",
            company_id=report.company_id,
            state=report.state_after,
            reason=report.stuck["reason"],
        )
    log.info(
        "reconcile.company",
        company_id=report.company_id,
        state_before=report.state_before,
        state_after=report.state_after,
        events=len(report.events),
        sync_evidence=report.sync_evidence,
        refreshed=len(report.refreshed),
    )


def reconcile_due(journey: Journey) -> dict[str, Any]:
    """Reconcile the companies past their deadline, most overdue first per
    state, within RECONCILE_BATCH_SIZE companies and RECONCILE_MAX_SECONDS;
    nothing while Codat's rate limit pauses reconciliation, and nothing more
    after a 429."""
    totals: dict[str, Any] = {"checked": 0, "changed": 0, "stuck": 0, "failed": 0}
    if journey.codat is None:
        log.info("reconcile.skipped", reason="CODAT_API_KEY is not set")
        return {**totals, "skipped": "CODAT_API_KEY is not set"}
    pause = rate_limit.current_pause(journey.redis, journey.keys, journey.now())
    if pause is not None:
        log.info("reconcile.paused", **pause.to_json())
        record_reconciliation(journey.redis, journey.keys.prefix, "paused")
        return {**totals, "paused": pause.to_json()}
    settings = journey.settings
    budget_ends = time.monotonic() + settings.reconcile_max_seconds
    now = journey.now()
    for state, after_seconds in thresholds(journey).items():
        remaining = settings.reconcile_batch_size - totals["checked"] - totals["failed"]
        if remaining <= 0:
            break
        for company_id in journey.index.due(state, now - after_seconds, remaining):
            if time.monotonic() > budget_ends:
                log.info("reconcile.budget_spent", **totals)
                return totals
            try:
                report = reconcile_company(journey, company_id)
            except CodatRateLimited as exc:
                # Stop here: this company stays due, first in line after the pause.
                log.warning(
                    "reconcile.rate_limited",
                    company_id=company_id,
                    retry_after_seconds=exc.retry_after_seconds,
                    **totals,
                )
                return {**totals, "rateLimited": {"retryAfterSeconds": exc.retry_after_seconds}}
            except CodatError as exc:
                totals["failed"] += 1
                # Back of the queue: tried again one threshold from now.
                journey.index.restart(company_id, state, journey.now())
                log.warning("reconcile.failed", company_id=company_id, error_code=exc.code)
                continue
            if report.skipped:
                continue
            totals["checked"] += 1
            totals["changed"] += report.state_after != report.state_before
            totals["stuck"] += report.stuck is not None
    log.info("reconcile.run", **totals)
    return totals


def stuck_reports(journey: Journey) -> list[dict[str, Any]]:
    """Reports of companies reconciliation set aside, dropping those whose
    company has since moved on."""
    reports = []
    for company_id, raw in journey.redis.hgetall(journey.keys.reconcile_stuck).items():
        try:
            report = json.loads(raw)
        except ValueError:
            continue
        record = journey.store.get(company_id.decode())
        if record is None or record.state.value != report.get("state"):
            journey.redis.hdel(journey.keys.reconcile_stuck, company_id)
            continue
        reports.append(report)
    return sorted(reports, key=lambda r: r.get("detectedAt") or "")


__all__ = ["ReconcileReport", "reconcile_company", "reconcile_due", "stuck_reports"]
