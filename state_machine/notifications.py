"""What downstream subscribers are told when a company changes.

Pure: from one commit's before/after facts, transitions and cause events, the
list of notifications to emit. Ids are derived from what happened, never
random, so a notification computed twice (a retried transaction, a replayed
delivery) carries the same id and subscribers can deduplicate:

* `company.state_changed`: one per transition, id from (company, from, to, cause event);
* `company.ready`: once per company, ever, id from the company id alone. A company
  that is revoked and reconnected gets state changes, not a second `company.ready`;
* `company.revoked`: one per transition into `revoked`;
* `connection.failed`: one per Codat `connection.failed` event that recorded an error.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from state_machine.company import CompanyFacts, CompanyState, Outcome, Transition
from state_machine.events import CodatEvent

NOTIFICATION_TYPES = (
    "company.ready",
    "company.state_changed",
    "company.revoked",
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


def notifications_for(
    before: CompanyFacts,
    outcome: Outcome,
    events: Sequence[CodatEvent],
    *,
    ready_before: bool,
) -> list[Notification]:
    """Notifications caused by applying `events` to `before`, giving `outcome`.

    `ready_before` says whether the company had ever been ready before this
    commit (kept in its stored record, since history is bounded)."""
    company_id = outcome.facts.company_id
    notes: list[Notification] = []
    for t in outcome.transitions:
        base = {
            "companyId": company_id,
            "from": t.from_state.value,
            "to": t.to_state.value,
            "cause": _cause(t),
        }
        notes.append(
            Notification(
                id=notification_id(company_id, t.from_state, t.to_state, t.cause_event_id),
                type="company.state_changed",
                company_id=company_id,
                data=base,
            )
        )
        if t.to_state == CompanyState.REVOKED:
            notes.append(
                Notification(
                    id=notification_id("company.revoked", company_id, t.cause_event_id),
                    type="company.revoked",
                    company_id=company_id,
                    data={**base, "companyDeleted": outcome.facts.deleted_at is not None},
                )
            )
    reached_ready = any(t.to_state == CompanyState.READY for t in outcome.transitions)
    if reached_ready and not ready_before:
        facts = outcome.facts
        notes.append(
            Notification(
                id=notification_id("company.ready", company_id),
                type="company.ready",
                company_id=company_id,
                data={
                    "companyId": company_id,
                    "name": facts.name,
                    "initialSyncCompletedAt": facts.initial_sync_completed_at,
                    "connections": _connections(facts),
                },
            )
        )
    notes.extend(_connection_failures(before, outcome.facts, events))
    return notes


def _connection_failures(
    before: CompanyFacts, after: CompanyFacts, events: Sequence[CodatEvent]
) -> list[Notification]:
    notes, seen = [], set()
    for event in events:
        if event.type != "connection.failed" or event.connection is None or event.id in seen:
            continue
        seen.add(event.id)
        connection = after.connection(event.connection.id)
        previous = before.connection(event.connection.id)
        error = connection.last_error if connection else None
        if error is None or error.event_id != event.id:
            continue  # a newer error is already recorded; this one is stale
        if previous is not None and previous.last_error == error:
            continue  # already recorded (and notified) by an earlier commit
        notes.append(
            Notification(
                id=notification_id("connection.failed", after.company_id, event.id),
                type="connection.failed",
                company_id=after.company_id,
                data={
                    "companyId": after.company_id,
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
        )
    return notes
