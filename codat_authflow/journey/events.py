"""Synthetic `CodatEvent`s: what an API call or a reconciliation learnt from
Codat, in the form the state machine already understands.

Every event here has `synthetic=True`, a `source` (`api`, `reconciliation`,
`link-callback` or `customer`), `generated_at` as a canonical UTC timestamp and an id
derived only from what was observed (source, event type, company or
connection id, status), so applying the same observation twice merges into
the same facts. Field names read from Codat's objects are the spec's
(`Connection`: id, integrationKey, sourceType, platformName, status,
created, dataConnectionErrors...).

About `generated_at`: an observation of a connection's *current* status is
stamped with the time we observed it (our clock). The state machine keeps,
per connection, the status with the latest stamp, so a webhook that Codat
generated after our call still wins, and an older one that arrives late does
not undo what we saw. (This assumes our clock and Codat's agree to within the
time it takes a user to act on a Link page, which NTP gives easily.) Reads are
stamped with Codat's own completion time instead: "this connection was read
at T" proves it was linked at T, not now.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from codat_authflow.journey.sync_evidence import ObservedRead
from state_machine import CodatEvent, CompanyFacts, ConnectionFacts, ConnectionSnapshot
from state_machine.events import (
    DataConnectionError,
    DataTypeRead,
    InvalidEvent,
    canonical_timestamp,
)

API = "api"
RECONCILIATION = "reconciliation"
LINK_CALLBACK = "link-callback"
CUSTOMER = "customer"  # the lender's customer, on the connect pages

# The event type that best names an observed status. The state machine reads
# the status from the snapshot; the type is what the company's history shows.
EVENT_TYPE_FOR_STATUS = {
    "PendingAuth": "connection.created",
    "Linked": "connection.connected",
    "Unlinked": "connection.disconnected",
    "Deauthorized": "connection.disconnected",
}

_NAMESPACE = uuid.UUID("6b0c6f5e-8a3c-4d0e-9a57-0c0d4a7f2a11")


def now_stamp(epoch: float | None = None) -> str:
    moment = datetime.now(UTC) if epoch is None else datetime.fromtimestamp(epoch, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def synthetic_id(source: str, event_type: str, *parts: str) -> str:
    """`{source}:{event type}:{uuid5 of the parts}`: readable in a company's
    history, identical for identical observations."""
    digest = uuid.uuid5(_NAMESPACE, "\x1f".join((source, event_type, *parts)))
    return f"{source}:{event_type}:{digest}"


def _timestamp(value: Any) -> str | None:
    try:
        return canonical_timestamp(value)
    except InvalidEvent:
        return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def snapshot_of(connection: Mapping[str, Any]) -> ConnectionSnapshot:
    """A `ConnectionSnapshot` from Codat's `Connection` object."""
    status = connection.get("status")
    errors = tuple(
        DataConnectionError(
            status_code=None if e.get("statusCode") is None else str(e.get("statusCode")),
            status_text=_text(e.get("statusText")),
            error_message=_text(e.get("errorMessage")),
            errored_on=_text(e.get("erroredOnUtc")),
        )
        for e in connection.get("dataConnectionErrors") or ()
        if isinstance(e, Mapping)
    )
    return ConnectionSnapshot(
        id=str(connection["id"]),
        status=status if isinstance(status, str) and status else None,
        source_type=_text(connection.get("sourceType")),
        platform_key=_text(connection.get("integrationKey")),
        platform_name=_text(connection.get("platformName")),
        integration_id=_text(connection.get("integrationId")),
        source_id=_text(connection.get("sourceId")),
        link_url=_text(connection.get("linkUrl")),
        created=_text(connection.get("created")),
        errors=errors,
    )


def _known_details(facts: ConnectionFacts | None) -> dict[str, Any]:
    if facts is None:
        return {}
    return {
        "source_type": facts.source_type,
        "platform_key": facts.platform_key,
        "platform_name": facts.platform_name,
        "integration_id": facts.integration_id,
        "created": facts.created,
    }


def connection_observed(
    company_id: str,
    connection: Mapping[str, Any],
    *,
    source: str,
    generated_at: str,
    event_type: str | None = None,
) -> CodatEvent:
    """Codat told us (in an API answer) what a connection is now."""
    snapshot = snapshot_of(connection)
    event_type = event_type or EVENT_TYPE_FOR_STATUS.get(
        snapshot.status or "", "connection.created"
    )
    return CodatEvent(
        id=synthetic_id(source, event_type, snapshot.id, snapshot.status or "-"),
        type=event_type,
        generated_at=generated_at,
        company_id=company_id,
        connection=snapshot,
        synthetic=True,
        source=source,
    )


def connection_deleted(
    company_id: str,
    connection_id: str,
    *,
    known: ConnectionFacts | None,
    source: str,
    generated_at: str,
) -> CodatEvent:
    """The connection no longer exists at Codat. The snapshot repeats what we
    already know of it, so the newest-details-win merge keeps its platform."""
    snapshot = ConnectionSnapshot(id=connection_id, status=None, **_known_details(known))
    return CodatEvent(
        id=synthetic_id(source, "connection.deleted", connection_id),
        type="connection.deleted",
        generated_at=generated_at,
        company_id=company_id,
        connection=snapshot,
        synthetic=True,
        source=source,
    )


def company_created(company: Mapping[str, Any], *, source: str, fallback_at: str) -> CodatEvent:
    """Codat's `Company` object, as the `company.created` it stands for.
    Stamped with Codat's `created` when it parses, which makes the event the
    same however often the company is observed."""
    company_id = str(company["id"])
    return CodatEvent(
        id=synthetic_id(source, "company.created", company_id),
        type="company.created",
        generated_at=_timestamp(company.get("created")) or fallback_at,
        company_id=company_id,
        company_name=_text(company.get("name")),
        company_description=_text(company.get("description")),
        synthetic=True,
        source=source,
    )


def read_completed(
    company_id: str,
    *,
    initial: bool,
    reads: Iterable[DataTypeRead],
    generated_at: str,
    source: str,
) -> CodatEvent:
    """A read event naming each data type read, as Codat's `dataTypes[]` would."""
    event_type = "read.completed.initial" if initial else "read.completed"
    data_types = tuple(sorted(set(reads), key=lambda r: (r.connection_id, r.data_type)))
    parts = (f"{r.connection_id}/{r.data_type}/{r.status}" for r in data_types)
    return CodatEvent(
        id=synthetic_id(source, event_type, company_id, generated_at, *parts),
        type=event_type,
        generated_at=generated_at,
        company_id=company_id,
        data_types=data_types,
        synthetic=True,
        source=source,
    )


def reads_observed(
    company_id: str, reads: Iterable[ObservedRead], *, source: str
) -> list[CodatEvent]:
    """Read events for reads observed through Codat's API: one event per
    instant and kind (initial or not), naming each data type read then."""
    grouped: dict[tuple[str, bool], list[DataTypeRead]] = {}
    for read in reads:
        grouped.setdefault((read.at, read.initial), []).append(
            DataTypeRead(read.connection_id, read.data_type, read.status)
        )
    return [
        read_completed(company_id, initial=initial, reads=group, generated_at=at, source=source)
        for (at, initial), group in sorted(grouped.items())
    ]


def _latest_error(snapshot: ConnectionSnapshot) -> tuple[str | None, str | None, str | None]:
    if not snapshot.errors:
        return (None, None, None)
    e = snapshot.errors[-1]
    return (e.status_code, e.status_text, e.error_message)


def is_news(facts: CompanyFacts, snapshot: ConnectionSnapshot) -> bool:
    """Whether an observed connection tells the state machine anything new:
    an unknown connection, another status, other details or a new error.
    Deleted connections stay deleted whatever Codat still lists."""
    known = facts.connection(snapshot.id)
    if known is None:
        return True
    if known.deleted_at is not None:
        return False
    if snapshot.status is not None and snapshot.status != known.status:
        return True
    details = (
        snapshot.source_type,
        snapshot.platform_key,
        snapshot.platform_name,
        snapshot.integration_id,
        snapshot.created,
    )
    if details != tuple(_known_details(known).values()):
        return True
    if snapshot.errors:
        error = known.last_error
        current = (error.status_code, error.status_text, error.error_message) if error else None
        return current != _latest_error(snapshot)
    return False


def observations(
    company_id: str,
    facts: CompanyFacts,
    connections: Iterable[Mapping[str, Any]],
    *,
    source: str,
    generated_at: str,
) -> list[CodatEvent]:
    """Events for those of Codat's connections that are news to `facts`."""
    events = []
    for connection in connections:
        event = connection_observed(
            company_id, connection, source=source, generated_at=generated_at
        )
        assert event.connection is not None
        if is_news(facts, event.connection):
            events.append(event)
    return events


def company_deleted(company_id: str, *, source: str, generated_at: str) -> CodatEvent:
    """Codat answers 404 for the company: it was deleted there."""
    return CodatEvent(
        id=synthetic_id(source, "company.deleted", company_id),
        type="company.deleted",
        generated_at=generated_at,
        company_id=company_id,
        synthetic=True,
        source=source,
    )
