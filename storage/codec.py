"""Company records to and from what is stored in Redis.

One key per company holds everything: facts, state, bounded history and the
bounded event log, as JSON compressed with zlib. The event ids, connection
ids and field names a company repeats compress well: a typical company takes
about 0.9 KB instead of 4 KB of plain JSON (bench/memory.py). Documents
written before compression (plain JSON, starting with `{`) still read.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Any

from state_machine import (
    CodatEvent,
    CompanyFacts,
    CompanyState,
    ConnectionFacts,
    ConnectionSnapshot,
    DataConnectionError,
    LastError,
    Transition,
)

FORMAT_VERSION = 1


@dataclass(frozen=True)
class HistoryEntry:
    from_state: str
    to_state: str
    at: str
    event_id: str
    event_type: str
    generated_at: str
    synthetic: bool = False

    @classmethod
    def of(cls, transition: Transition, at: str) -> HistoryEntry:
        return cls(
            from_state=transition.from_state.value,
            to_state=transition.to_state.value,
            at=at,
            event_id=transition.cause_event_id,
            event_type=transition.cause_event_type,
            generated_at=transition.cause_generated_at,
            synthetic=transition.synthetic,
        )

    def to_json(self) -> dict[str, Any]:
        entry = {
            "from": self.from_state,
            "to": self.to_state,
            "at": self.at,
            "eventId": self.event_id,
            "eventType": self.event_type,
            "eventGeneratedAt": self.generated_at,
        }
        if self.synthetic:
            entry["synthetic"] = True
        return entry

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HistoryEntry:
        return cls(
            from_state=data["from"],
            to_state=data["to"],
            at=data["at"],
            event_id=data["eventId"],
            event_type=data["eventType"],
            generated_at=data["eventGeneratedAt"],
            synthetic=bool(data.get("synthetic", False)),
        )


@dataclass(frozen=True)
class CompanyRecord:
    facts: CompanyFacts
    state: CompanyState
    history: tuple[HistoryEntry, ...]
    first_seen_at: str
    updated_at: str
    first_ready_at: str | None = None  # kept apart from history, which is bounded
    # The newest events applied, oldest first, as `event_to_log` dicts.
    events: tuple[dict[str, Any], ...] = ()

    @classmethod
    def new(cls, company_id: str, now: str) -> CompanyRecord:
        return cls(
            facts=CompanyFacts(company_id=company_id),
            state=CompanyState.CREATED,
            history=(),
            first_seen_at=now,
            updated_at=now,
        )


def _compact(mapping: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if v is not None and v is not False}


def _key(value) -> list | None:
    return list(value) if value is not None else None


def _tuple_key(value) -> tuple | None:
    return (value[0], int(value[1]), value[2]) if value is not None else None


def _error_to_json(error: LastError | None) -> dict[str, Any] | None:
    if error is None:
        return None
    return _compact(
        {
            "statusCode": error.status_code,
            "statusText": error.status_text,
            "errorMessage": error.error_message,
            "at": error.at,
            "eventId": error.event_id,
        }
    )


def _error_from_json(data: dict[str, Any] | None) -> LastError | None:
    if data is None:
        return None
    return LastError(
        status_code=data.get("statusCode"),
        status_text=data.get("statusText"),
        error_message=data.get("errorMessage"),
        at=data["at"],
        event_id=data["eventId"],
    )


def _connection_to_json(c: ConnectionFacts) -> dict[str, Any]:
    return _compact(
        {
            "id": c.id,
            "status": c.status,
            "statusKey": _key(c.status_key),
            "deletedAt": c.deleted_at,
            "everLinked": c.ever_linked,
            "sourceType": c.source_type,
            "platformKey": c.platform_key,
            "platformName": c.platform_name,
            "integrationId": c.integration_id,
            "created": c.created,
            "detailsKey": _key(c.details_key),
            "lastError": _error_to_json(c.last_error),
        }
    )


def _connection_from_json(d: dict[str, Any]) -> ConnectionFacts:
    return ConnectionFacts(
        id=d["id"],
        status=d.get("status"),
        status_key=_tuple_key(d.get("statusKey")),
        deleted_at=d.get("deletedAt"),
        ever_linked=bool(d.get("everLinked", False)),
        source_type=d.get("sourceType"),
        platform_key=d.get("platformKey"),
        platform_name=d.get("platformName"),
        integration_id=d.get("integrationId"),
        created=d.get("created"),
        details_key=_tuple_key(d.get("detailsKey")),
        last_error=_error_from_json(d.get("lastError")),
    )


def facts_to_json(f: CompanyFacts) -> dict[str, Any]:
    return _compact(
        {
            "companyId": f.company_id,
            "name": f.name,
            "description": f.description,
            "nameKey": _key(f.name_key),
            "connections": [_connection_to_json(c) for c in f.connections] or None,
            "createdAt": f.created_at,
            "deletedAt": f.deleted_at,
            "syncStartedAt": f.sync_started_at,
            "initialSyncCompletedAt": f.initial_sync_completed_at,
        }
    )


def facts_from_json(d: dict[str, Any]) -> CompanyFacts:
    return CompanyFacts(
        company_id=d["companyId"],
        name=d.get("name"),
        description=d.get("description"),
        name_key=_tuple_key(d.get("nameKey")),
        connections=tuple(_connection_from_json(c) for c in d.get("connections", ())),
        created_at=d.get("createdAt"),
        deleted_at=d.get("deletedAt"),
        sync_started_at=d.get("syncStartedAt"),
        initial_sync_completed_at=d.get("initialSyncCompletedAt"),
    )


def encode_record(record: CompanyRecord) -> bytes:
    document = {
        "v": FORMAT_VERSION,
        "state": record.state.value,
        "facts": facts_to_json(record.facts),
        "history": [h.to_json() for h in record.history],
        "firstSeenAt": record.first_seen_at,
        "updatedAt": record.updated_at,
        **({"firstReadyAt": record.first_ready_at} if record.first_ready_at else {}),
        **({"events": list(record.events)} if record.events else {}),
    }
    return zlib.compress(json.dumps(document, separators=(",", ":")).encode(), 6)


def decode_record(raw: bytes) -> CompanyRecord:
    data = json.loads(raw if raw[:1] == b"{" else zlib.decompress(raw))
    return CompanyRecord(
        facts=facts_from_json(data["facts"]),
        state=CompanyState(data["state"]),
        history=tuple(HistoryEntry.from_json(h) for h in data.get("history", ())),
        first_seen_at=data["firstSeenAt"],
        updated_at=data["updatedAt"],
        first_ready_at=data.get("firstReadyAt"),
        events=tuple(data.get("events", ())),
    )


def event_to_log(event: CodatEvent, applied_at: str) -> dict[str, Any]:
    """The fields the state machine reads, for the per-company event log
    (so a company can be rebuilt by replaying it). Not Codat's raw body:
    payload fields the state machine ignores are left out to save memory."""
    data: dict[str, Any] = {
        "id": event.id,
        "type": event.type,
        "at": event.generated_at,
        "appliedAt": applied_at,
    }
    if event.company_name is not None or event.company_description is not None:
        data["name"] = event.company_name
        data["description"] = event.company_description
    if event.connection is not None:
        c = event.connection
        data["connection"] = _compact(
            {
                "id": c.id,
                "status": c.status,
                "sourceType": c.source_type,
                "platformKey": c.platform_key,
                "platformName": c.platform_name,
                "integrationId": c.integration_id,
                "created": c.created,
                "errors": [
                    [e.status_code, e.status_text, e.error_message, e.errored_on] for e in c.errors
                ]
                or None,
            }
        )
    if event.read_connection_ids:
        data["reads"] = list(event.read_connection_ids)
    if event.synthetic:
        data["synthetic"] = True
        data["source"] = event.source
    return data


def event_from_log(data: dict[str, Any], company_id: str) -> tuple[CodatEvent, str]:
    """Inverse of `event_to_log`: the event and when it was applied."""
    connection = data.get("connection")
    return (
        CodatEvent(
            id=data["id"],
            type=data["type"],
            generated_at=data["at"],
            company_id=company_id,
            company_name=data.get("name"),
            company_description=data.get("description"),
            connection=ConnectionSnapshot(
                id=connection["id"],
                status=connection.get("status"),
                source_type=connection.get("sourceType"),
                platform_key=connection.get("platformKey"),
                platform_name=connection.get("platformName"),
                integration_id=connection.get("integrationId"),
                created=connection.get("created"),
                errors=tuple(DataConnectionError(*e) for e in connection.get("errors", ())),
            )
            if connection
            else None,
            read_connection_ids=tuple(data.get("reads", ())),
            synthetic=bool(data.get("synthetic", False)),
            source=data.get("source", "webhook"),
        ),
        data["appliedAt"],
    )
