"""What Codat's data endpoints prove about a company's reads, per data type.

When the read webhooks never arrive, reconciliation rebuilds what they would
have said, in their own terms: for a connection and a data type, a read with
a status, and whether it was an *initial* read (`read.completed.initial` is
sent the first time a data type is stored, so the first read that reached a
final status, and the first one that was `Complete`, are initial reads).

**Pull operations (list-pull-operations) are the primary evidence**: each
`PullOperation` names its `connectionId`, `dataType`, `status` and its
`requested`/`completed` times. Per linked connection and data type, only
fetches with a final status count (anything but the in-progress statuses):
the first one is an initial read, so is the first `Complete` one, and the
latest one is the data type's current read.

**The company's data status (get-company-data-status) is the fallback**, for
when the pull history says nothing about the linked connections. A
`DataStatus` has no connection id, so it is attributed only when exactly one
connection is linked: a data type with a `lastSuccessfulSync` was stored (an
initial `Complete` read then); one whose `currentStatus` is a final error and
that never synced had its initial read fail (stamped when we observed it).

Only connections we know as linked count. A pull operation of another
connection (for instance one Codat still lists after it was deleted) neither
proves nor delays anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from state_machine.events import COMPLETE, IN_PROGRESS_STATUSES, InvalidEvent, canonical_timestamp


@dataclass(frozen=True, order=True)
class ObservedRead:
    """A read of one data type of one connection, as a webhook would tell it."""

    at: str  # canonical UTC
    connection_id: str
    data_type: str
    status: str
    initial: bool


@dataclass(frozen=True)
class SyncEvidence:
    reads: tuple[ObservedRead, ...] = ()
    basis: str = "none"  # "pull-operations", "data-status" or "none"

    @property
    def found(self) -> bool:
        return bool(self.reads)


def _stamp(value: Any) -> str | None:
    try:
        return canonical_timestamp(value)
    except InvalidEvent:
        return None


def _final(status: Any) -> bool:
    return isinstance(status, str) and bool(status) and status not in IN_PROGRESS_STATUSES


def _finished_at(operation: Mapping[str, Any]) -> str | None:
    return _stamp(operation.get("completed")) or _stamp(operation.get("requested"))


def _reads_of(connection_id: str, data_type: str, ops: list[Mapping[str, Any]]):
    final = [op for op in ops if _final(op.get("status")) and _finished_at(op)]
    if not final:
        return []
    first_complete = next((op for op in final if op.get("status") == COMPLETE), None)
    chosen = {id(final[-1]): False}  # the latest read; initial if it is also a first
    chosen[id(final[0])] = True
    if first_complete is not None:
        chosen[id(first_complete)] = True
    return [
        ObservedRead(
            at=_finished_at(op) or "",
            connection_id=connection_id,
            data_type=data_type,
            status=str(op["status"]),
            initial=chosen[id(op)],
        )
        for op in final
        if id(op) in chosen
    ]


def from_pull_operations(
    operations: Iterable[Mapping[str, Any]], linked_connection_ids: Iterable[str]
) -> SyncEvidence:
    linked = set(linked_connection_ids)
    fetches: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for op in operations:
        connection_id, data_type = op.get("connectionId"), op.get("dataType")
        if connection_id in linked and isinstance(data_type, str) and _stamp(op.get("requested")):
            fetches.setdefault((connection_id, data_type), []).append(op)
    if not fetches:
        return SyncEvidence()
    reads = []
    for (connection_id, data_type), ops in fetches.items():
        ops.sort(key=lambda op: _stamp(op.get("requested")) or "")
        reads += _reads_of(connection_id, data_type, ops)
    # Fetches that are all still running say "nothing yet", not "no history".
    return SyncEvidence(reads=tuple(sorted(reads)), basis="pull-operations")


def from_data_status(
    statuses: Mapping[str, Mapping[str, Any]],
    linked_connection_ids: Iterable[str],
    *,
    observed_at: str,
) -> SyncEvidence:
    linked = sorted(set(linked_connection_ids))
    if len(linked) != 1:
        return SyncEvidence()
    (connection_id,) = linked
    reads = []
    for data_type, status in statuses.items():
        if not isinstance(status, Mapping) or not status.get("currentStatus"):
            continue
        name = status.get("dataType") if isinstance(status.get("dataType"), str) else data_type
        synced = _stamp(status.get("lastSuccessfulSync"))
        current = status["currentStatus"]
        if synced is not None:
            reads.append(ObservedRead(synced, connection_id, name, COMPLETE, True))
        elif _final(current):
            reads.append(ObservedRead(observed_at, connection_id, name, str(current), True))
    return SyncEvidence(reads=tuple(sorted(reads)), basis="data-status")


def needs_data_status(evidence: SyncEvidence) -> bool:
    """The pull history said nothing at all about the linked connections."""
    return evidence.basis == "none"
