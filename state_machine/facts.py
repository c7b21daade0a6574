"""What we know of a company, and the one merge that adds an event to it.

Why facts and not a classic transition table: Codat delivers at least once and
in no guaranteed order. We never "move" a company on receipt of an event;
each event is merged into `CompanyFacts` with a merge that is commutative,
associative and idempotent, and the state is derived from the facts
(`state_machine.company`). So the same set of events gives the same facts in
any order and with any repetition, and a stale event cannot undo a newer one.

The merge rules, per kind of fact:

* a *latest* value (a connection's status, a data type's latest read, its
  latest error) carries a version key `(generatedDate, rank, event id)` and
  the greatest key wins: time first, then a fixed rank, then the event id, so
  ties never depend on arrival order;
* a *first* value (created, deleted, first complete read) keeps the earliest;
* a flag (`ever_linked`) only ever turns on.

Per connection and per data type we keep what Codat's read events say (each
element of `dataTypes[]`, for whichever connection it names): the latest read
status, when the data type was first read completely, whether an initial read
(`read.completed.initial`, sent the first time a data type is stored) was
seen and whether it was complete, the last time `recordsModified` was true,
and the last error status with its `issues`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from state_machine.events import (
    COMPANY_EVENTS,
    COMPLETE,
    CONNECTION_EVENTS,
    READ_EVENTS,
    CodatEvent,
    DataConnectionError,
    DataTypeRead,
    ReadIssue,
)

LINKED = "Linked"
PENDING = "PendingAuth"

# Tie-break between two statuses stamped with the same `generatedDate`: the one
# further along the lifecycle wins, so the outcome never depends on arrival
# order. Rank -1 is a status we inferred (a complete read proves the
# connection was linked when it ran), which any status Codat stated outranks.
# A status we do not know ranks 0, like `PendingAuth`.
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
class DataTypeFacts:
    """What the read events say about one data type of one connection."""

    data_type: str
    status: str | None = None  # of the latest read (greatest `status_key`)
    status_key: VersionKey | None = None
    issues: tuple[ReadIssue, ...] = ()  # of the latest read
    first_complete_at: str | None = None  # earliest read that was `Complete`
    initial_read_at: str | None = None  # earliest `read.completed.initial` naming it
    initial_complete_at: str | None = None  # earliest initial read that was `Complete`
    modified_at: str | None = None  # latest read with `recordsModified: true`
    error_status: str | None = None  # of the latest read that was not `Complete`
    error_key: VersionKey | None = None
    error_issues: tuple[ReadIssue, ...] = ()

    @property
    def last_read_at(self) -> str | None:
        return self.status_key[0] if self.status_key else None

    @property
    def complete(self) -> bool:
        """Read completely at least once: its data is in Codat's cache."""
        return self.first_complete_at is not None

    @property
    def initial_failed(self) -> bool:
        """An initial read was seen and no read of it was ever complete."""
        return self.initial_read_at is not None and self.first_complete_at is None


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
    data_types: tuple[DataTypeFacts, ...] = ()  # sorted by data type

    @property
    def is_linked(self) -> bool:
        return self.deleted_at is None and self.status == LINKED

    @property
    def is_pending(self) -> bool:
        return self.deleted_at is None and self.status == PENDING

    @property
    def initial_sync_complete(self) -> bool:
        """Its own initial sync stored data: some initial read was complete."""
        return any(d.initial_complete_at is not None for d in self.data_types)

    def data_type(self, name: str) -> DataTypeFacts | None:
        for data_type in self.data_types:
            if data_type.data_type == name:
                return data_type
        return None


@dataclass(frozen=True, slots=True)
class CompanyFacts:
    company_id: str
    name: str | None = None
    description: str | None = None
    name_key: VersionKey | None = None
    connections: tuple[ConnectionFacts, ...] = ()
    created_at: str | None = None
    deleted_at: str | None = None

    def connection(self, connection_id: str) -> ConnectionFacts | None:
        for connection in self.connections:
            if connection.id == connection_id:
                return connection
        return None

    @property
    def last_error(self) -> LastError | None:
        errors = [c.last_error for c in self.connections if c.last_error is not None]
        return max(errors, key=lambda e: (e.at, e.event_id), default=None)

    @property
    def sync_started_at(self) -> str | None:
        """When the first read of any connection completed."""
        reads = [d.status_key[0] for c in self.connections for d in c.data_types if d.status_key]
        return min(reads, default=None)

    @property
    def initial_sync_completed_at(self) -> str | None:
        """When an initial read of any connection first stored data."""
        done = [
            d.initial_complete_at
            for c in self.connections
            for d in c.data_types
            if d.initial_complete_at
        ]
        return min(done, default=None)


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


def _earliest(current: str | None, candidate: str | None) -> str | None:
    if candidate is None:
        return current
    return candidate if current is None or candidate < current else current


def _latest(current: str | None, candidate: str | None) -> str | None:
    if candidate is None:
        return current
    return candidate if current is None or candidate > current else current


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
    if ever_linked == connection.ever_linked:
        return connection
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
    """Every element of `dataTypes[]`, for whichever connection it names.

    Only a `Complete` read proves that its connection was linked when it ran;
    a read that failed (`AuthError` after a deauthorization, for instance)
    proves nothing about linkage and is only recorded as the data type's
    status."""
    for read in event.data_types:
        current = facts.connection(read.connection_id)
        connection = _merge_data_type(
            current or ConnectionFacts(id=read.connection_id), read, event
        )
        if read.complete:
            key = (event.generated_at, INFERRED_LINKED_RANK, event.id)
            connection = _merge_status(connection, LINKED, key)
        if connection is not current:
            facts = _with_connection(facts, connection)
    return facts


def _merge_data_type(
    connection: ConnectionFacts, read: DataTypeRead, event: CodatEvent
) -> ConnectionFacts:
    at = event.generated_at
    current = connection.data_type(read.data_type) or DataTypeFacts(data_type=read.data_type)
    # Same instant, two statuses: the status text breaks the tie, then the id.
    key = (at, 1 if read.complete else 0, f"{event.id}\x1f{read.status or ''}")
    latest = _newer(current.status_key, key)
    error = read.status != COMPLETE and _newer(current.error_key, key)
    # One constructor call, not a chain of `replace`: this is the hot path.
    merged = DataTypeFacts(
        data_type=read.data_type,
        status=read.status if latest else current.status,
        status_key=key if latest else current.status_key,
        issues=read.issues if latest else current.issues,
        first_complete_at=_earliest(current.first_complete_at, at if read.complete else None),
        initial_read_at=_earliest(current.initial_read_at, at if event.initial else None),
        initial_complete_at=_earliest(
            current.initial_complete_at, at if event.initial and read.complete else None
        ),
        modified_at=_latest(current.modified_at, at if read.records_modified else None),
        error_status=read.status if error else current.error_status,
        error_key=key if error else current.error_key,
        error_issues=read.issues if error else current.error_issues,
    )
    if merged == current:
        return connection
    others = tuple(d for d in connection.data_types if d.data_type != read.data_type)
    data_types = tuple(sorted((*others, merged), key=lambda d: d.data_type))
    return replace(connection, data_types=data_types)
