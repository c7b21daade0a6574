"""Operator maintenance on stored companies (the `flask --app app companies
rebuild` and `history purge` commands).

Rebuild: replay a company's event log (`CompanyStore.events`, the newest
`COMPANY_EVENT_LOG_LIMIT` events) through the state machine from nothing,
and compare the result with the stored record. The merge is order
independent and idempotent, so a complete log must give the stored facts
exactly; a difference means a bug since fixed, a hand edit, or a log that
lost older events (it is full, or was purged). `write_rebuilt` replaces the
stored facts and state with the replayed ones, through the same commit as
`codat_authflow.company_updates` (document, per-state counts, reconciliation
index) under an optimistic transaction, and records a synthetic `rebuild`
history entry. It sends no
notification: subscribers hear of the next real change (a basis it makes
ready is recorded as announced, like `firstReadyAt`).

Purge: drop history entries and event-log entries older than a cut-off, and
ignored events. The company's facts and state, `firstReadyAt` and the funnel
index are kept; a company rebuilt afterwards replays only what is left.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any

from redis import Redis
from redis.exceptions import WatchError

from codat_authflow.company_updates import Change, commit_change
from codat_authflow.storage.codec import CompanyRecord, HistoryEntry, decode_record, encode_record
from codat_authflow.storage.companies import CompanyStore, utc_now
from codat_authflow.storage.funnel import company_ids
from codat_authflow.storage.keys import Keys
from state_machine import CodatEvent, CompanyFacts, CompanyState, Outcome, apply_events
from state_machine.readiness import assess

MAX_ATTEMPTS = 20


class RecordChanged(RuntimeError):
    """The company changed while we were comparing; run the command again."""


@dataclass(frozen=True)
class Replay:
    record: CompanyRecord
    events: list[tuple[CodatEvent, str]]
    outcome: Outcome
    log_full: bool  # the log holds its maximum: older events may have been dropped

    @property
    def differences(self) -> list[str]:
        return differences(self.record, self.outcome)


def replay(store: CompanyStore, company_id: str) -> Replay | None:
    """None if the company is unknown."""
    record = store.get(company_id)
    if record is None:
        return None
    events = store.events(company_id)
    outcome = apply_events(CompanyFacts(company_id=company_id), [e for e, _ in events], store.gate)
    full = bool(store.event_log_limit) and len(events) >= store.event_log_limit
    return Replay(record, events, outcome, full)


def _internal(name: str) -> bool:
    return name.endswith("_key")  # version keys for the merge's tie-breaks


def differences(record: CompanyRecord, outcome: Outcome) -> list[str]:
    """Human-readable differences between the stored and replayed company."""
    found = []
    if record.state != outcome.state:
        found.append(f"state: stored {record.state.value}, replayed {outcome.state.value}")
    stored, replayed = record.facts, outcome.facts
    for f in fields(CompanyFacts):
        if f.name == "connections" or _internal(f.name):
            continue
        a, b = getattr(stored, f.name), getattr(replayed, f.name)
        if a != b:
            found.append(f"{f.name}: stored {a!r}, replayed {b!r}")
    stored_connections = {c.id: c for c in stored.connections}
    replayed_connections = {c.id: c for c in replayed.connections}
    for connection_id in sorted(set(stored_connections) | set(replayed_connections)):
        a, b = stored_connections.get(connection_id), replayed_connections.get(connection_id)
        if a is None or b is None:
            where = "stored" if b is None else "replayed"
            found.append(f"connection {connection_id}: only in the {where} company")
            continue
        found += _field_differences(f"connection {connection_id}", a, b, skip={"data_types"})
        stored_types = {d.data_type: d for d in a.data_types}
        replayed_types = {d.data_type: d for d in b.data_types}
        for name in sorted(set(stored_types) | set(replayed_types)):
            x, y = stored_types.get(name), replayed_types.get(name)
            label = f"connection {connection_id} data type {name}"
            if x is None or y is None:
                found.append(
                    f"{label}: only in the {'stored' if y is None else 'replayed'} company"
                )
            else:
                found += _field_differences(label, x, y)
    return found


def _field_differences(label: str, a: Any, b: Any, skip: Collection[str] = ()) -> list[str]:
    found = []
    for f in fields(a):
        if f.name in skip or _internal(f.name):
            continue
        x, y = getattr(a, f.name), getattr(b, f.name)
        if x != y:
            found.append(f"{label} {f.name}: stored {x!r}, replayed {y!r}")
    return found


def write_rebuilt(store: CompanyStore, expected: CompanyRecord, outcome: Outcome) -> CompanyRecord:
    """Replace the stored facts and state with `outcome`'s, if the record is
    still `expected`; raises `RecordChanged` otherwise."""
    redis, keys = store.redis, store.keys
    company_id = outcome.facts.company_id
    key = keys.company(company_id)
    with redis.pipeline(transaction=True) as pipe:
        try:
            pipe.watch(key)
            raw = pipe.get(key)
            if raw is None or decode_record(raw) != expected:
                raise RecordChanged(f"company {company_id} changed meanwhile; run it again")
            stamp = utc_now()
            ready = outcome.state == CompanyState.READY
            history = expected.history
            if outcome.state != expected.state:
                history = (
                    *history,
                    HistoryEntry(
                        from_state=expected.state.value,
                        to_state=outcome.state.value,
                        at=stamp,
                        event_id=f"rebuild:{uuid.uuid4()}",
                        event_type="rebuild",
                        generated_at=stamp,
                        synthetic=True,
                    ),
                )
            rebuilt = replace(
                expected,
                facts=outcome.facts,
                state=outcome.state,
                history=history[-store.history_limit :],
                updated_at=stamp,
                first_ready_at=expected.first_ready_at or (stamp if ready else None),
                ready_connections=(
                    (expected.ready_connections or frozenset())
                    | assess(outcome.facts, store.gate).basis
                    if ready
                    else expected.ready_connections
                ),
            )
            pipe.multi()
            commit_change(pipe, store, Change(company_id, expected, rebuilt, is_new=False), stamp)
            pipe.execute()
        except WatchError as exc:
            raise RecordChanged(f"company {company_id} changed meanwhile; run it again") from exc
    return rebuilt


# -- purge ---------------------------------------------------------------------------


@dataclass
class PurgeReport:
    companies: int = 0
    companies_changed: int = 0
    history_entries: int = 0
    event_log_entries: int = 0
    ignored_events: int = 0

    def to_json(self) -> dict[str, int]:
        return {
            "companiesScanned": self.companies,
            "companiesChanged": self.companies_changed,
            "historyEntriesRemoved": self.history_entries,
            "eventLogEntriesRemoved": self.event_log_entries,
            "ignoredEventsRemoved": self.ignored_events,
        }


def _purge_company(redis: Redis, keys: Keys, company_id: str, cutoff: str, dry_run: bool):
    key = keys.company(company_id)
    with redis.pipeline(transaction=True) as pipe:
        for _attempt in range(MAX_ATTEMPTS):
            try:
                pipe.watch(key)
                raw = pipe.get(key)
                if raw is None:
                    pipe.reset()
                    return 0, 0
                record = decode_record(raw)
                kept = tuple(h for h in record.history if h.at >= cutoff)
                kept_events = tuple(
                    e for e in record.events if str(e.get("appliedAt") or "") >= cutoff
                )
                old_history = len(record.history) - len(kept)
                old_events = len(record.events) - len(kept_events)
                if dry_run or not (old_history or old_events):
                    pipe.reset()
                    return old_history, old_events
                pipe.multi()
                pipe.set(key, encode_record(replace(record, history=kept, events=kept_events)))
                pipe.execute()
                return old_history, old_events
            except WatchError:
                continue
    raise RecordChanged(f"company {company_id} kept changing; run the purge again")


def purge_history(
    redis: Redis, keys: Keys, older_than: datetime, *, dry_run: bool = False
) -> PurgeReport:
    """Remove what is older than `older_than` (aware datetime)."""
    cutoff = older_than.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    report = PurgeReport()
    for company_id in company_ids(redis, keys):
        report.companies += 1
        history, events = _purge_company(redis, keys, company_id, cutoff, dry_run)
        report.history_entries += history
        report.event_log_entries += events
        report.companies_changed += bool(history or events)
    min_id = f"{int(older_than.timestamp() * 1000)}-0"
    if dry_run:
        report.ignored_events = len(redis.xrange(keys.ignored_events, "-", f"({min_id}"))
    else:
        trimmed = redis.xtrim(keys.ignored_events, minid=min_id, approximate=False)
        report.ignored_events = int(trimmed)
    return report
