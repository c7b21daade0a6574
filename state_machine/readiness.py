"""When a company's data is ready: the readiness gate.

`read.completed.initial` is sent the first time *a data type* is stored for a
connection, so the first one does not mean the connection's initial sync is
done, and a read can complete with every data type failed. Readiness is
therefore decided per connection and per data type, from what is linked now:

* with no gate (`READY_DATA_TYPES` unset): some linked connection has an
  initial read with at least one `Complete` data type;
* with a gate (`READY_DATA_TYPES=balanceSheet,profitAndLoss`): every listed
  data type has a `Complete` read from a connection that is linked now (that
  read is the connection's own proof of having synced the type).

A connection that never completed its own initial read cannot make the
company ready, however ready the company was before (a new platform linked
after the first one was deleted waits for its own sync). A connection that
had synced and is reconnected counts again at once: its reads are facts that
a status change does not erase.

The *basis* of readiness is the set of linked connections whose reads satisfy
the gate; notifications use it to tell a new platform's readiness from a
reconnection.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from state_machine.events import IN_PROGRESS_STATUSES
from state_machine.facts import CompanyFacts, ConnectionFacts, DataTypeFacts


@dataclass(frozen=True, slots=True)
class ReadinessGate:
    """The data types that must be read completely; empty means "any"."""

    data_types: tuple[str, ...] = ()

    @classmethod
    def of(cls, names: Iterable[str]) -> ReadinessGate:
        return cls(tuple(sorted({n.strip() for n in names if n.strip()})))

    def describe(self) -> str:
        return ",".join(self.data_types) if self.data_types else "any data type"


ANY_DATA = ReadinessGate()


@dataclass(frozen=True, slots=True)
class Readiness:
    met: bool
    basis: frozenset[str]  # connection ids whose reads satisfy the gate
    missing: tuple[str, ...] = ()  # gated data types with no complete read yet
    failing: tuple[tuple[str, str, str | None], ...] = ()  # (connection, type, status)


def failed(data_type: DataTypeFacts) -> bool:
    """Its latest read ended without data (an error status, or one we do not know)."""
    status = data_type.status
    return status is not None and status != "Complete" and status not in IN_PROGRESS_STATUSES


def assess(facts: CompanyFacts, gate: ReadinessGate = ANY_DATA) -> Readiness:
    if facts.deleted_at is not None:
        return Readiness(met=False, basis=frozenset(), missing=gate.data_types)
    linked = [c for c in facts.connections if c.is_linked]
    if not gate.data_types:
        basis = frozenset(c.id for c in linked if c.initial_sync_complete)
        failing = tuple(
            (c.id, d.data_type, d.status) for c in linked for d in c.data_types if failed(d)
        )
        return Readiness(met=bool(basis), basis=basis, failing=() if basis else failing)
    providers = {
        name: [c.id for c in linked if (d := c.data_type(name)) is not None and d.complete]
        for name in gate.data_types
    }
    missing = tuple(name for name, ids in providers.items() if not ids)
    failing = tuple(
        (c.id, d.data_type, d.status)
        for c in linked
        for d in c.data_types
        if d.data_type in missing and failed(d)
    )
    basis = frozenset(i for ids in providers.values() for i in ids)
    return Readiness(met=not missing, basis=basis, missing=missing, failing=failing)


def initial_sync_failures(
    connection: ConnectionFacts, gate: ReadinessGate = ANY_DATA
) -> tuple[DataTypeFacts, ...]:
    """The data types whose initial reads only failed, when that keeps this
    connection from readiness: with a gate, the gated types among them; with
    none, all of them, if no initial read of the connection stored anything."""
    tried = [d for d in connection.data_types if d.initial_failed]
    if gate.data_types:
        return tuple(d for d in tried if d.data_type in gate.data_types)
    if connection.initial_sync_complete or any(d.complete for d in connection.data_types):
        return ()
    return tuple(tried)
