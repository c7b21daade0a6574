"""The service that changes companies: apply events, commit everything a change implies.

`CompanyUpdates.apply` is the single way a company changes. The drain
(webhooks), the journey (API calls), reconciliation and `companies rebuild`
all come through here. For each company it loads the record, runs the pure
state machine (`state_machine.apply_events`) and computes the notifications,
then commits, in one Redis transaction, the side writes listed in
`_commit_change`:

1. the company document (`storage.companies`);
2. the per-state counts (`storage.companies`);
3. the reconciliation index (`storage.reconciliation`);
4. the funnel's first-seen index (`storage.funnel`), and the
   companies-created and transition counters (`observability.metrics`);
5. the notifications, to the outbox (`storage.outbox`);

plus whatever the caller adds with `also` (the drain's inbox
acknowledgement), so they all commit with the state or not at all.

An erased company (`{p}:tombstones`, `journey.erasure`) is never written
again: its events are dropped, reported in `Applied.erased` and passed to
`also` like committed ones, so the drain acknowledges them (a late webhook
for an erased company is acknowledged and ignored, never recreates it).

Why optimistic concurrency (WATCH/MULTI) rather than a Lua script or a lock:
the state machine is Python, so a Lua script cannot run it; a lock adds a
round trip and a lease to get wrong when a worker dies holding it. WATCH lets
any number of worker processes apply events for the same company at once: the
transaction that commits second sees that its read went stale, re-reads and
re-applies (the merge is idempotent and order independent, so re-applying is
always right). Conflicts are rare in practice, since a company's events are
seconds apart, and cheap when they happen.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import structlog
from redis.client import Pipeline
from redis.exceptions import WatchError

from codat_authflow.observability.metrics import (
    COMPANIES_CREATED,
    TRANSITIONS,
    counter_update,
    queue_updates,
)
from codat_authflow.storage.codec import CompanyRecord, HistoryEntry, event_to_log
from codat_authflow.storage.companies import CompanyStore, utc_now
from codat_authflow.storage.funnel import index_first_seen
from codat_authflow.storage.reconciliation import schedule_reconciliation
from state_machine import CodatEvent, CompanyState, Outcome, Transition, apply_events
from state_machine.notifications import Notification, notifications_for, ready_connections

log = structlog.get_logger(__name__)

MAX_ATTEMPTS = 20


class ConcurrencyConflict(RuntimeError):
    """Other writers kept changing the same companies; try again later."""


@dataclass(frozen=True)
class Applied:
    outcomes: dict[str, Outcome]  # companies whose events were applied and committed
    records: dict[str, CompanyRecord]
    failed: dict[str, Exception]  # companies whose events raised; nothing committed for them
    notifications: dict[str, list[Notification]]  # committed to the outbox with the state
    erased: frozenset[str] = frozenset()  # erased companies: their events were dropped


@dataclass(frozen=True)
class Change:
    """One company's change, ready to commit."""

    company_id: str
    before: CompanyRecord
    after: CompanyRecord
    is_new: bool
    transitions: tuple[Transition, ...] = ()
    notifications: tuple[Notification, ...] = ()


class CompanyUpdates:
    def __init__(self, store: CompanyStore):
        self.store = store

    def apply(
        self,
        events_by_company: Mapping[str, Sequence[CodatEvent]],
        *,
        also: Callable[[Pipeline, set[str]], None] | None = None,
        now: Callable[[], str] = utc_now,
    ) -> Applied:
        """Apply each company's events and commit all companies at once.

        `also(pipe, committed_company_ids)` adds commands to the same MULTI
        (the ids include erased companies, whose events are dropped).
        A company whose events make the state machine raise is left out of
        the commit and reported in `failed`; the others still commit.
        """
        store = self.store
        company_ids = sorted(events_by_company)
        keys = [store.keys.company(cid) for cid in company_ids]
        for attempt in range(MAX_ATTEMPTS):
            with store.redis.pipeline(transaction=True) as pipe:
                try:
                    if keys:
                        pipe.watch(*keys, store.keys.tombstones)
                    raw_records = pipe.mget(keys) if keys else []
                    tombs = pipe.hmget(store.keys.tombstones, company_ids) if keys else []
                    erased = frozenset(c for c, t in zip(company_ids, tombs, strict=True) if t)
                    stamp = now()
                    outcomes, records, failed, notes, changes = {}, {}, {}, {}, []
                    for company_id, raw in zip(company_ids, raw_records, strict=True):
                        if company_id in erased:
                            continue
                        before = store.decode(raw, company_id, stamp)
                        events = events_by_company[company_id]
                        try:
                            outcome = apply_events(
                                before.facts, events, store.gate, start=before.state
                            )
                            notes[company_id] = notifications_for(
                                outcome, ready_before=before.ready_connections
                            )
                        except Exception as exc:  # a bug or a poison event; isolate it
                            failed[company_id] = exc
                            continue
                        after = self._record_after(before, outcome, events, stamp)
                        outcomes[company_id], records[company_id] = outcome, after
                        if raw is None or after is not before:
                            changes.append(
                                Change(
                                    company_id,
                                    before,
                                    after,
                                    is_new=raw is None,
                                    transitions=outcome.transitions,
                                    notifications=tuple(notes[company_id]),
                                )
                            )
                    pipe.multi()
                    for change in changes:
                        commit_change(pipe, store, change, stamp)
                    if also is not None:
                        also(pipe, set(outcomes) | erased)
                    pipe.execute()
                    return Applied(
                        outcomes=outcomes,
                        records=records,
                        failed=failed,
                        notifications={c: n for c, n in notes.items() if n and c in outcomes},
                        erased=erased,
                    )
                except WatchError:
                    log.info("company.write_conflict", attempt=attempt + 1, companies=len(keys))
                    # Back off a little, at random: writers that collided do
                    # not collide again in lockstep on a hot company.
                    time.sleep(random.uniform(0, 0.002 * (attempt + 1)))
        raise ConcurrencyConflict(f"gave up after {MAX_ATTEMPTS} conflicting attempts")

    def apply_one(
        self, company_id: str, events: Sequence[CodatEvent], *, now: Callable[[], str] = utc_now
    ) -> CompanyRecord | None:
        """Apply events to one company; its record afterwards. Raises what
        the state machine raised."""
        if not events:
            return self.store.get(company_id)
        applied = self.apply({company_id: events}, now=now)
        if company_id in applied.failed:
            raise applied.failed[company_id]
        return applied.records.get(company_id)

    def _record_after(
        self,
        before: CompanyRecord,
        outcome: Outcome,
        events: Sequence[CodatEvent],
        stamp: str,
    ) -> CompanyRecord:
        if outcome.facts == before.facts and outcome.state == before.state:
            return before  # duplicates and stale events: nothing to keep
        store = self.store
        logged = before.events + tuple(event_to_log(e, stamp) for e in events)
        history = before.history + tuple(HistoryEntry.of(t, stamp) for t in outcome.transitions)
        reached_ready = any(t.to_state == CompanyState.READY for t in outcome.transitions)
        return replace(
            before,
            facts=outcome.facts,
            state=outcome.state,
            history=history[-store.history_limit :],
            updated_at=stamp,
            first_ready_at=before.first_ready_at or (stamp if reached_ready else None),
            ready_connections=ready_connections(outcome, before.ready_connections),
            events=logged[-store.event_log_limit :] if store.event_log_limit else (),
        )


def _counter_updates(prefix: str, change: Change) -> list:
    updates = [counter_update(prefix, COMPANIES_CREATED)] if change.is_new else []
    for t in change.transitions:
        updates.append(counter_update(prefix, TRANSITIONS, (t.from_state.value, t.to_state.value)))
    return updates


def commit_change(pipe: Pipeline, store: CompanyStore, change: Change, stamp: str) -> None:
    """Every write a company change implies, queued on `pipe` (inside MULTI)."""
    before, after = change.before, change.after
    store.put(pipe, after)
    store.count_state(pipe, before=None if change.is_new else before.state, after=after.state)
    schedule_reconciliation(
        pipe, change.company_id, after.state, stamp, keys=store.keys, previous=before.state
    )
    if change.is_new:
        index_first_seen(pipe, store.keys, change.company_id, stamp)
    queue_updates(pipe, _counter_updates(store.keys.prefix, change))
    for notification in change.notifications:
        store.outbox.append(pipe, notification, stamp)
