"""What Codat's data endpoints prove about a company's initial sync.

The `read.completed.initial` webhook is "called when the initial fetch of
data types for a product has been completed" (Codat's spec), and its payload
lists each data type with its final dataset status, which may be an error: it
means "every data type has been fetched once", not "every fetch succeeded".
`read.completed` means some fetch completed. Reconciliation rebuilds those two
facts from Codat's API when the webhooks never arrive:

**Pull operations (list-pull-operations) are the primary evidence**, because
each `PullOperation` names its `connectionId`, `dataType`, `status` and its
`requested`/`completed` times. For one linked connection:

* its *initial fetch* of a data type is that type's earliest pull operation
  (by `requested`); later ones are scheduled refreshes;
* the initial sync is complete when the connection has pull operations and
  the initial fetch of every data type it pulled has reached a final status
  (anything but the in-progress statuses below: `Complete`, `NotSupported`,
  or one of the error statuses). It completed at the latest `completed` (or,
  when Codat leaves that out, `requested`) among those initial fetches;
* a read has completed (the company is `syncing`) as soon as any of its pull
  operations is final.

Looking only at each data type's first fetch means a refresh running now
does not hide an initial sync that finished earlier.

**The company's data status (get-company-data-status) is the fallback**, for
when the pull history shows nothing for the linked connections (a history
paged beyond what we read, or an account whose history is not visible). A
`DataStatus` has no connection id, so it can only support a company-wide
conclusion: initial sync complete when data statuses exist and all of their
`currentStatus` are final; a read completed when any data type has a
`lastSuccessfulSync`. Events built from it name no connection.

Only connections we know as linked count. A pull operation of another
connection (for instance one Codat still lists after it was deleted) neither
proves nor delays anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from state_machine.events import InvalidEvent, canonical_timestamp

#: Dataset statuses (Codat's `PullOperation.status`) of a fetch still running.
IN_PROGRESS = frozenset(
    {
        "Initial",
        "Queued",
        "Fetching",
        "MapQueued",
        "Mapping",
        "ProcessingQueued",
        "Processing",
        "ValidationQueued",
        "Validating",
    }
)


@dataclass(frozen=True)
class SyncEvidence:
    """`initial_completed_at` / `read_completed_at`: canonical UTC stamps, or None.
    `connection_ids`: the connections the evidence is about (may be empty)."""

    initial_completed_at: str | None = None
    read_completed_at: str | None = None
    connection_ids: tuple[str, ...] = ()
    basis: str = "none"  # "pull-operations", "data-status" or "none"

    @property
    def found(self) -> bool:
        return self.read_completed_at is not None or self.initial_completed_at is not None


def _stamp(value: Any) -> str | None:
    try:
        return canonical_timestamp(value)
    except InvalidEvent:
        return None


def _final(status: Any) -> bool:
    return isinstance(status, str) and bool(status) and status not in IN_PROGRESS


def _finished_at(operation: Mapping[str, Any]) -> str | None:
    return _stamp(operation.get("completed")) or _stamp(operation.get("requested"))


def from_pull_operations(
    operations: Iterable[Mapping[str, Any]], linked_connection_ids: Iterable[str]
) -> SyncEvidence:
    linked = set(linked_connection_ids)
    by_connection: dict[str, list[Mapping[str, Any]]] = {}
    for op in operations:
        connection_id = op.get("connectionId")
        if connection_id in linked and _stamp(op.get("requested")) is not None:
            by_connection.setdefault(connection_id, []).append(op)

    initial_done: dict[str, str] = {}
    read_done: dict[str, str] = {}
    for connection_id, ops in by_connection.items():
        finished = [_finished_at(op) for op in ops if _final(op.get("status"))]
        if finished:
            read_done[connection_id] = max(f for f in finished if f)
        first_fetch: dict[str, Mapping[str, Any]] = {}
        for op in sorted(ops, key=lambda op: _stamp(op.get("requested")) or ""):
            first_fetch.setdefault(str(op.get("dataType")), op)
        if first_fetch and all(_final(op.get("status")) for op in first_fetch.values()):
            initial_done[connection_id] = max(_finished_at(op) or "" for op in first_fetch.values())

    if initial_done:
        return SyncEvidence(
            initial_completed_at=max(initial_done.values()),
            read_completed_at=max(read_done.values()),
            connection_ids=tuple(sorted(initial_done)),
            basis="pull-operations",
        )
    if read_done:
        return SyncEvidence(
            read_completed_at=max(read_done.values()),
            connection_ids=tuple(sorted(read_done)),
            basis="pull-operations",
        )
    if by_connection:  # fetches exist and are all running: nothing complete yet
        return SyncEvidence(basis="pull-operations")
    return SyncEvidence()


def from_data_status(
    statuses: Mapping[str, Mapping[str, Any]], *, observed_at: str
) -> SyncEvidence:
    """`observed_at` stamps an initial sync whose fetches all ended in errors
    (no `lastSuccessfulSync` to date it by)."""
    entries = [s for s in statuses.values() if isinstance(s, Mapping) and s.get("currentStatus")]
    if not entries:
        return SyncEvidence()
    successes = [t for t in (_stamp(s.get("lastSuccessfulSync")) for s in entries) if t]
    read_at = max(successes) if successes else None
    if all(_final(s.get("currentStatus")) for s in entries):
        done_at = read_at or observed_at
        return SyncEvidence(
            initial_completed_at=done_at, read_completed_at=done_at, basis="data-status"
        )
    return SyncEvidence(read_completed_at=read_at, basis="data-status")


def needs_data_status(evidence: SyncEvidence) -> bool:
    """The pull history said nothing at all about the linked connections."""
    return evidence.basis == "none"
