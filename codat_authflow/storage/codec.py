"""Company records to and from what is stored in Redis.

One key per company holds everything: facts, state, bounded history and the
bounded event log, as JSON compressed with zlib. The event ids, connection
ids and field names a company repeats compress well: a typical company takes
about 0.9 KB instead of 4 KB of plain JSON (perf/memory.py). Documents
written before compression (plain JSON, starting with `{`) still read.

Format versions (`v` in the document): 1 kept company-wide read facts
(`syncStartedAt`, `initialSyncCompletedAt`) and event-log reads as bare
connection ids; 2 keeps reads per connection and per data type. A version 1
document is upgraded as it is read, keeping the meaning it had: each
connection that was ever linked gets one `legacy` data type, complete when the
company had synced (`LEGACY_DATA_TYPE`). Stored again, it is written as
version 2. `flask --app app companies rebuild` recomputes a company from its
event log under today's rules and reports the differences.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, replace
from typing import Any

from state_machine import (
    CodatEvent,
    CompanyFacts,
    CompanyState,
    ConnectionFacts,
    ConnectionSnapshot,
    DataConnectionError,
    DataTypeFacts,
    DataTypeRead,
    LastError,
    ReadIssue,
    Transition,
)

FORMAT_VERSION = 2
#: What a version 1 read (no data type known) becomes: a complete read of a
#: data type of this name.
LEGACY_DATA_TYPE = "legacy"


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
        entry: dict[str, Any] = {
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
    # Connections that have made the company ready (None: never ready); see
    # state_machine.notifications.ready_connections.
    ready_connections: frozenset[str] | None = None
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


def _issues_to_json(issues: tuple[ReadIssue, ...]) -> list[list[str | None]] | None:
    return [[i.type, i.message] for i in issues] or None


def _issues_from_json(data: list[list[str | None]] | None) -> tuple[ReadIssue, ...]:
    return tuple(ReadIssue(type=t, message=m) for t, m in data or ())


def _data_type_to_json(d: DataTypeFacts) -> dict[str, Any]:
    return _compact(
        {
            "dataType": d.data_type,
            "status": d.status,
            "statusKey": _key(d.status_key),
            "issues": _issues_to_json(d.issues),
            "firstCompleteAt": d.first_complete_at,
            "initialReadAt": d.initial_read_at,
            "initialCompleteAt": d.initial_complete_at,
            "modifiedAt": d.modified_at,
            "errorStatus": d.error_status,
            "errorKey": _key(d.error_key),
            "errorIssues": _issues_to_json(d.error_issues),
        }
    )


def _data_type_from_json(d: dict[str, Any]) -> DataTypeFacts:
    return DataTypeFacts(
        data_type=d["dataType"],
        status=d.get("status"),
        status_key=_tuple_key(d.get("statusKey")),
        issues=_issues_from_json(d.get("issues")),
        first_complete_at=d.get("firstCompleteAt"),
        initial_read_at=d.get("initialReadAt"),
        initial_complete_at=d.get("initialCompleteAt"),
        modified_at=d.get("modifiedAt"),
        error_status=d.get("errorStatus"),
        error_key=_tuple_key(d.get("errorKey")),
        error_issues=_issues_from_json(d.get("errorIssues")),
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
            "dataTypes": [_data_type_to_json(d) for d in c.data_types] or None,
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
        data_types=tuple(_data_type_from_json(t) for t in d.get("dataTypes", ())),
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
        }
    )


def facts_from_json(d: dict[str, Any], version: int = FORMAT_VERSION) -> CompanyFacts:
    facts = CompanyFacts(
        company_id=d["companyId"],
        name=d.get("name"),
        description=d.get("description"),
        name_key=_tuple_key(d.get("nameKey")),
        connections=tuple(_connection_from_json(c) for c in d.get("connections", ())),
        created_at=d.get("createdAt"),
        deleted_at=d.get("deletedAt"),
    )
    return _upgrade_v1(facts, d) if version < 2 else facts


def _upgrade_v1(facts: CompanyFacts, d: dict[str, Any]) -> CompanyFacts:
    """Version 1 knew reads company-wide: give each connection that was ever
    linked one complete `legacy` data type, so the company keeps its state."""
    started, initial = d.get("syncStartedAt"), d.get("initialSyncCompletedAt")
    if started is None and initial is None:
        return facts
    first = min(t for t in (started, initial) if t)
    legacy = DataTypeFacts(
        data_type=LEGACY_DATA_TYPE,
        status="Complete",
        status_key=(max(t for t in (started, initial) if t), 1, LEGACY_DATA_TYPE),
        first_complete_at=first,
        initial_read_at=initial,
        initial_complete_at=initial,
    )
    return replace(
        facts,
        connections=tuple(
            replace(c, data_types=(legacy,)) if c.ever_linked else c for c in facts.connections
        ),
    )


def encode_record(record: CompanyRecord) -> bytes:
    document = {
        "v": FORMAT_VERSION,
        "state": record.state.value,
        "facts": facts_to_json(record.facts),
        "history": [h.to_json() for h in record.history],
        "firstSeenAt": record.first_seen_at,
        "updatedAt": record.updated_at,
        **({"firstReadyAt": record.first_ready_at} if record.first_ready_at is not None else {}),
        **(
            {"readyConnections": sorted(record.ready_connections)}
            if record.ready_connections is not None
            else {}
        ),
        **({"events": list(record.events)} if record.events else {}),
    }
    return zlib.compress(json.dumps(document, separators=(",", ":")).encode(), 6)


def decode_record(raw: bytes) -> CompanyRecord:
    data = json.loads(raw if raw[:1] == b"{" else zlib.decompress(raw))
    version = int(data.get("v", 1))
    facts = facts_from_json(data["facts"], version)
    ready = data.get("readyConnections")
    if ready is None and version < 2 and data.get("firstReadyAt"):
        # Version 1 kept no set: ready once, on any of them. A version 2
        # document without one never had one (readiness is not invented).
        ready = [c.id for c in facts.connections if c.ever_linked]
    return CompanyRecord(
        facts=facts,
        state=CompanyState(data["state"]),
        history=tuple(HistoryEntry.from_json(h) for h in data.get("history", ())),
        first_seen_at=data["firstSeenAt"],
        updated_at=data["updatedAt"],
        first_ready_at=data.get("firstReadyAt"),
        ready_connections=frozenset(ready) if ready is not None else None,
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
    if event.data_types:
        data["dataTypes"] = [
            [r.connection_id, r.data_type, r.status, int(r.records_modified)]
            + ([_issues_to_json(r.issues)] if r.issues else [])
            for r in event.data_types
        ]
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
            data_types=_reads_from_log(data),
            synthetic=bool(data.get("synthetic", False)),
            source=data.get("source", "webhook"),
        ),
        data["appliedAt"],
    )


def _reads_from_log(data: dict[str, Any]) -> tuple[DataTypeRead, ...]:
    if "reads" in data:  # version 1: the connection ids of a read, nothing more
        return tuple(DataTypeRead(c, LEGACY_DATA_TYPE, "Complete") for c in data["reads"])
    return tuple(
        DataTypeRead(
            connection_id=r[0],
            data_type=r[1],
            status=r[2],
            records_modified=bool(r[3]),
            issues=_issues_from_json(r[4] if len(r) > 4 else None),
        )
        for r in data.get("dataTypes", ())
    )
