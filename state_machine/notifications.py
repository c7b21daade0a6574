"""What downstream subscribers are told when a company changes.

Pure: from one commit's steps (each event folded in, with the facts before
and after), the list of notifications to emit. Ids are derived from what
happened, never random, so a notification computed twice (a retried
transaction, a replayed delivery) carries the same id and subscribers can
deduplicate:

* `company.state_changed`: one per transition, id from (company, from, to, cause event);
* `company.ready`: when the company enters `ready` on a *basis* (the linked
  connections whose reads satisfy the readiness gate) with a connection that
  never made it ready before. So exactly once for the first readiness (id from
  the company id alone), once more if a new platform later makes it ready
  again (id from the company and the new connections), and never for the
  reconnection of a connection that had already made it ready;
* `company.revoked`: one per transition into `revoked`;
* `company.sync_failed`: a linked connection's initial reads finished with
  failures for the data types the gate needs (with no gate: with no
  `Complete` at all); one per read event that shows it;
* `company.data_changed` (opt-in: only subscriptions that list it, or `*`):
  a `read.completed` of a `ready` company with `recordsModified: true`; one
  per read event;
* `connection.failed`: one per Codat `connection.failed` event that recorded an error.

They are listed in the order of the steps that caused them, so how events
are cut into commits never changes what subscribers are told, nor its order.

Which connections have already made the company ready depends on the order
events were seen in, so it is kept in the company's record
(`ready_connections`), like the bounded history, not in the facts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from state_machine.company import CompanyState, Outcome, Step, Transition
from state_machine.facts import CompanyFacts, ConnectionFacts, DataTypeFacts
from state_machine.readiness import assess, initial_sync_failures

NOTIFICATION_TYPES = (
    "company.ready",
    "company.state_changed",
    "company.revoked",
    "company.sync_failed",
    "company.data_changed",
    "connection.failed",
)


@dataclass(frozen=True, slots=True)
class Notification:
    id: str
    type: str
    company_id: str
    data: dict[str, Any]


def notification_id(*parts: str) -> str:
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return f"evt_{digest[:32]}"


def _cause(transition: Transition) -> dict[str, Any]:
    return {
        "eventId": transition.cause_event_id,
        "eventType": transition.cause_event_type,
        "eventGeneratedAt": transition.cause_generated_at,
        "synthetic": transition.synthetic,
    }


def _connections(facts: CompanyFacts) -> list[dict[str, Any]]:
    return [
        {
            "id": c.id,
            "status": "Deleted" if c.deleted_at else c.status,
            "sourceType": c.source_type,
            "platformKey": c.platform_key,
            "platformName": c.platform_name,
        }
        for c in facts.connections
    ]


def ready_connections(outcome: Outcome, previous: frozenset[str] | None) -> frozenset[str] | None:
    """The connections that have made the company ready, after this commit:
    `previous` plus the basis at every step that left the company ready.
    None while the company has never been ready."""
    seen = previous
    for step in outcome.steps:
        if step.state_after == CompanyState.READY:
            seen = (seen or frozenset()) | assess(step.after, outcome.gate).basis
    return seen


def notifications_for(
    outcome: Outcome,
    *,
    ready_before: frozenset[str] | None,
) -> list[Notification]:
    """Notifications caused by the steps of `outcome`.

    `ready_before` is the set of connections that had made the company ready
    before this commit (None if it never was), kept in its stored record."""
    notes: list[Notification] = []
    transitions = iter(outcome.transitions)
    seen = ready_before
    for step in outcome.steps:
        if step.state_after != step.state_before:
            notes.extend(_state_changed(next(transitions), outcome))
        if step.state_after == CompanyState.READY:
            basis = assess(step.after, outcome.gate).basis
            if step.state_before != CompanyState.READY and not basis <= (seen or frozenset()):
                notes.append(_ready(step, basis, seen, outcome))
            seen = (seen or frozenset()) | basis
        if step.news and step.event.initial:
            notes.extend(_sync_failures(step, outcome))
        if step.news and step.event.type == "read.completed":
            notes.extend(_data_changed(step))
        notes.extend(_connection_failure(step))
    return notes


def _state_changed(t: Transition, outcome: Outcome) -> list[Notification]:
    company_id = outcome.facts.company_id
    base = {
        "companyId": company_id,
        "from": t.from_state.value,
        "to": t.to_state.value,
        "cause": _cause(t),
    }
    notes = [
        Notification(
            id=notification_id(company_id, t.from_state, t.to_state, t.cause_event_id),
            type="company.state_changed",
            company_id=company_id,
            data=base,
        )
    ]
    if t.to_state == CompanyState.REVOKED:
        notes.append(
            Notification(
                id=notification_id("company.revoked", company_id, t.cause_event_id),
                type="company.revoked",
                company_id=company_id,
                data={**base, "companyDeleted": outcome.facts.deleted_at is not None},
            )
        )
    return notes


def _data_type_view(connection: ConnectionFacts, d: DataTypeFacts) -> dict[str, Any]:
    return {
        "type": d.data_type,
        "status": d.status,
        "connectionId": connection.id,
        "completedAt": d.first_complete_at,
    }


def _ready(
    step: Step, basis: frozenset[str], seen: frozenset[str] | None, outcome: Outcome
) -> Notification:
    facts, company_id = step.after, step.after.company_id
    first = seen is None
    new = sorted(basis - (seen or frozenset()))
    ids = ("company.ready", company_id) if first else ("company.ready", company_id, *new)
    connections = [c for c in facts.connections if c.id in basis]
    return Notification(
        id=notification_id(*ids),
        type="company.ready",
        company_id=company_id,
        data={
            "companyId": company_id,
            "name": facts.name,
            "first": first,
            "initialSyncCompletedAt": facts.initial_sync_completed_at,
            "readyDataTypes": list(outcome.gate.data_types),
            "connectionIds": sorted(basis),
            "dataTypes": [
                _data_type_view(c, d) for c in connections for d in c.data_types if d.complete
            ],
            "connections": _connections(facts),
            "cause": {"eventId": step.event.id, "eventType": step.event.type},
        },
    )


def _issues(d: DataTypeFacts) -> list[dict[str, Any]]:
    return [{"type": i.type, "message": i.message} for i in d.error_issues]


def _sync_failures(step: Step, outcome: Outcome) -> list[Notification]:
    notes = []
    event, company_id = step.event, step.after.company_id
    for connection_id in event.read_connection_ids:
        shown = any(r.connection_id == connection_id and not r.complete for r in event.data_types)
        connection = step.after.connection(connection_id)
        if not shown or connection is None or not connection.is_linked:
            continue
        failing = initial_sync_failures(connection, outcome.gate)
        if not failing:
            continue
        notes.append(
            Notification(
                id=notification_id("company.sync_failed", company_id, event.id, connection_id),
                type="company.sync_failed",
                company_id=company_id,
                data={
                    "companyId": company_id,
                    "connectionId": connection_id,
                    "platformKey": connection.platform_key,
                    "platformName": connection.platform_name,
                    "sourceType": connection.source_type,
                    "readyDataTypes": list(outcome.gate.data_types),
                    "dataTypes": [
                        {"type": d.data_type, "status": d.error_status, "issues": _issues(d)}
                        for d in failing
                    ],
                    "cause": {"eventId": event.id, "eventType": event.type},
                },
            )
        )
    return notes


def _data_changed(step: Step) -> list[Notification]:
    if step.state_after != CompanyState.READY:
        return []
    event, company_id = step.event, step.after.company_id
    changed = [r for r in event.data_types if r.records_modified]
    if not changed:
        return []
    connection_ids = sorted({r.connection_id for r in changed})
    return [
        Notification(
            id=notification_id("company.data_changed", company_id, event.id),
            type="company.data_changed",
            company_id=company_id,
            data={
                "companyId": company_id,
                "connectionId": connection_ids[0] if len(connection_ids) == 1 else None,
                "connectionIds": connection_ids,
                "dataTypes": [
                    {"type": r.data_type, "status": r.status, "connectionId": r.connection_id}
                    for r in changed
                ],
                "modifiedAt": event.generated_at,
                "cause": {"eventId": event.id, "eventType": event.type},
            },
        )
    ]


def _connection_failure(step: Step) -> list[Notification]:
    event = step.event
    if event.type != "connection.failed" or event.connection is None:
        return []
    connection = step.after.connection(event.connection.id)
    previous = step.before.connection(event.connection.id)
    error = connection.last_error if connection else None
    if connection is None or error is None or error.event_id != event.id:
        return []  # a newer error is already recorded; this one is stale
    if previous is not None and previous.last_error == error:
        return []  # already recorded (and notified) by an earlier step or commit
    return [
        Notification(
            id=notification_id("connection.failed", step.after.company_id, event.id),
            type="connection.failed",
            company_id=step.after.company_id,
            data={
                "companyId": step.after.company_id,
                "connectionId": connection.id,
                "platformKey": connection.platform_key,
                "platformName": connection.platform_name,
                "sourceType": connection.source_type,
                "statusCode": error.status_code,
                "statusText": error.status_text,
                "errorMessage": error.error_message,
                "erroredAt": error.at,
                "cause": {"eventId": event.id, "eventType": event.type},
            },
        )
    ]
