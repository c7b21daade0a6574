"""Per-company facts, the state derived from them, and the transitions.

Why facts and not a classic transition table: Codat delivers at least once and
in no guaranteed order. We therefore never "move" a company from one state to
another on receipt of an event. Each event is merged into `CompanyFacts` with a
merge that is commutative, associative and idempotent (per connection the
status carried by the newest event wins; deletions are permanent; first-seen
timestamps keep the earliest value), and the state is a pure function of the
facts. The same set of events therefore gives the same state in any order and
with any repetition, and a stale event cannot move a company backwards.

Transitions are what an observer sees while events arrive: folding one event
at a time, every change of derived state is reported with its cause.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum

from state_machine.events import (
    COMPANY_EVENTS,
    CONNECTION_EVENTS,
    READ_EVENTS,
    CodatEvent,
    DataConnectionError,
)


class CompanyState(StrEnum):
    CREATED = "created"
    LINKING = "linking"
    LINKED = "linked"
    SYNCING = "syncing"
    READY = "ready"
    REVOKED = "revoked"


LINKED = "Linked"
PENDING = "PendingAuth"

# Tie-break between two statuses stamped with the same `generatedDate`: the one
# further along the lifecycle wins, so the outcome never depends on arrival
# order. Rank -1 is a status we inferred (a sync proves the connection was
# linked at that time), which any status Codat stated outranks.
INFERRED_LINKED_RANK = -1
STATUS_RANK = {"PendingAuth": 0, "Linked": 1, "Unlinked": 2, "Deauthorized": 3}

# A version key orders facts: (generatedDate, rank, event id). Event ids make
# ties between two distinct events at the same instant deterministic.
VersionKey = tuple[str, int, str]


@dataclass(frozen=True, slots=True)
class LastError:
    """The latest `dataConnectionErrors` entry reported for a connection."""

    status_code: str | None
    status_text: str | None
    error_message: str | None
    at: str
    event_id: str


@dataclass(frozen=True, slots=True)
class ConnectionFacts:
    id: str
    status: str | None = None
    status_key: VersionKey | None = None
    deleted_at: str | None = None
    ever_linked: bool = False
    source_type: str | None = None
    platform_key: str | None = None
    platform_name: str | None = None
    integration_id: str | None = None
    created: str | None = None
    details_key: VersionKey | None = None
    last_error: LastError | None = None

    @property
    def is_linked(self) -> bool:
        return self.deleted_at is None and self.status == LINKED

    @property
    def is_pending(self) -> bool:
        return self.deleted_at is None and self.status == PENDING


@dataclass(frozen=True, slots=True)
class CompanyFacts:
    company_id: str
    name: str | None = None
    description: str | None = None
    name_key: VersionKey | None = None
    connections: tuple[ConnectionFacts, ...] = ()
    created_at: str | None = None
    deleted_at: str | None = None
    sync_started_at: str | None = None
    initial_sync_completed_at: str | None = None

    def connection(self, connection_id: str) -> ConnectionFacts | None:
        for connection in self.connections:
            if connection.id == connection_id:
                return connection
        return None

    @property
    def last_error(self) -> LastError | None:
        errors = [c.last_error for c in self.connections if c.last_error is not None]
        return max(errors, key=lambda e: (e.at, e.event_id), default=None)


@dataclass(frozen=True, slots=True)
class Transition:
    from_state: CompanyState
    to_state: CompanyState
    cause_event_id: str
    cause_event_type: str
    cause_generated_at: str
    synthetic: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    facts: CompanyFacts
    state: CompanyState
    transitions: tuple[Transition, ...] = field(default=())


def derive_state(facts: CompanyFacts) -> CompanyState:
    """The company's state is a function of its facts alone."""
    if facts.deleted_at is not None:
        return CompanyState.REVOKED
    if any(c.is_linked for c in facts.connections):
        if facts.initial_sync_completed_at is not None:
            return CompanyState.READY
        if facts.sync_started_at is not None:
            return CompanyState.SYNCING
        return CompanyState.LINKED
    if any(c.ever_linked for c in facts.connections):
        return CompanyState.REVOKED
    if any(c.is_pending for c in facts.connections):
        return CompanyState.LINKING
    return CompanyState.CREATED


def apply_events(facts: CompanyFacts, events: Iterable[CodatEvent]) -> Outcome:
    """Fold events into the facts one by one, reporting every state change."""
    state = derive_state(facts)
    transitions: list[Transition] = []
    for event in events:
        facts = merge_event(facts, event)
        new_state = derive_state(facts)
        if new_state != state:
            transitions.append(
                Transition(
                    from_state=state,
                    to_state=new_state,
                    cause_event_id=event.id,
                    cause_event_type=event.type,
                    cause_generated_at=event.generated_at,
                    synthetic=event.synthetic,
                )
            )
            state = new_state
    return Outcome(facts=facts, state=state, transitions=tuple(transitions))


def apply_event(facts: CompanyFacts, event: CodatEvent) -> Outcome:
    return apply_events(facts, (event,))


def merge_event(facts: CompanyFacts, event: CodatEvent) -> CompanyFacts:
    """Merge one event into the facts. Commutative, associative, idempotent."""
    if event.company_id != facts.company_id or not event.handled:
        return facts
    facts = _merge_company_details(facts, event)
    if event.type in COMPANY_EVENTS:
        if event.type == "company.created":
            return replace(facts, created_at=_earliest(facts.created_at, event.generated_at))
        return replace(facts, deleted_at=_earliest(facts.deleted_at, event.generated_at))
    if event.type in CONNECTION_EVENTS:
        return _merge_connection_event(facts, event)
    if event.type in READ_EVENTS:
        return _merge_read_event(facts, event)
    return facts


def _earliest(current: str | None, candidate: str) -> str:
    return candidate if current is None or candidate < current else current


def _newer(current: VersionKey | None, candidate: VersionKey) -> bool:
    return current is None or candidate > current


def _merge_company_details(facts: CompanyFacts, event: CodatEvent) -> CompanyFacts:
    """Name and description come whole from the newest event that carries any."""
    if event.company_name is None and event.company_description is None:
        return facts
    key = (event.generated_at, 0, event.id)
    if not _newer(facts.name_key, key):
        return facts
    return replace(
        facts, name=event.company_name, description=event.company_description, name_key=key
    )


def _with_connection(facts: CompanyFacts, connection: ConnectionFacts) -> CompanyFacts:
    others = tuple(c for c in facts.connections if c.id != connection.id)
    return replace(facts, connections=tuple(sorted((*others, connection), key=lambda c: c.id)))


def _status_stated_by(event: CodatEvent) -> str | None:
    """The status an event asserts. Codat's `connection.deleted` example still
    carries `Linked`, and `connection.reconnected` means `Linked` whatever the
    payload says, so the event type decides where it is unambiguous."""
    if event.type in ("connection.connected", "connection.reconnected"):
        return LINKED
    return event.connection.status if event.connection else None


def _merge_status(connection: ConnectionFacts, status: str, key: VersionKey) -> ConnectionFacts:
    ever_linked = connection.ever_linked or status == LINKED
    if _newer(connection.status_key, key):
        return replace(connection, status=status, status_key=key, ever_linked=ever_linked)
    return replace(connection, ever_linked=ever_linked)


def _merge_error(
    connection: ConnectionFacts, errors: tuple[DataConnectionError, ...], event: CodatEvent
) -> ConnectionFacts:
    if not errors:
        return connection
    latest = errors[-1]
    error = LastError(
        status_code=latest.status_code,
        status_text=latest.status_text,
        error_message=latest.error_message,
        at=event.generated_at,
        event_id=event.id,
    )
    current = connection.last_error
    if current is None or (error.at, error.event_id) > (current.at, current.event_id):
        return replace(connection, last_error=error)
    return connection


def _merge_connection_event(facts: CompanyFacts, event: CodatEvent) -> CompanyFacts:
    snapshot = event.connection
    assert snapshot is not None
    connection = facts.connection(snapshot.id) or ConnectionFacts(id=snapshot.id)

    # Descriptive fields come whole from the newest connection event, so the
    # result does not depend on which of two partial snapshots came first.
    details_key = (event.generated_at, 0, event.id)
    if _newer(connection.details_key, details_key):
        connection = replace(
            connection,
            source_type=snapshot.source_type,
            platform_key=snapshot.platform_key,
            platform_name=snapshot.platform_name,
            integration_id=snapshot.integration_id,
            created=snapshot.created,
            details_key=details_key,
        )

    if event.type == "connection.deleted":
        connection = replace(
            connection, deleted_at=_earliest(connection.deleted_at, event.generated_at)
        )
    status = _status_stated_by(event)
    if status is not None:
        key = (event.generated_at, STATUS_RANK.get(status, 0), event.id)
        connection = _merge_status(connection, status, key)
    connection = _merge_error(connection, snapshot.errors, event)
    return _with_connection(facts, connection)


def _merge_read_event(facts: CompanyFacts, event: CodatEvent) -> CompanyFacts:
    facts = replace(facts, sync_started_at=_earliest(facts.sync_started_at, event.generated_at))
    if event.type == "read.completed.initial":
        facts = replace(
            facts,
            initial_sync_completed_at=_earliest(
                facts.initial_sync_completed_at, event.generated_at
            ),
        )
    # A completed read of a connection proves it was linked when the read ran.
    for connection_id in event.read_connection_ids:
        connection = facts.connection(connection_id) or ConnectionFacts(id=connection_id)
        key = (event.generated_at, INFERRED_LINKED_RANK, event.id)
        facts = _with_connection(facts, _merge_status(connection, LINKED, key))
    return facts
