"""The company repository, and the one function that applies events to it.

`CompanyStore.apply` is the single way a company changes: the worker draining
webhooks and (later) the API and reconciliation all call it with
`CodatEvent`s, and it runs the pure state machine inside an optimistic
transaction.

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
from datetime import UTC, datetime

import structlog
from redis import Redis
from redis.client import Pipeline
from redis.exceptions import WatchError

from codat_authflow.storage.codec import (
    CompanyRecord,
    HistoryEntry,
    decode_record,
    encode_record,
    event_from_log,
    event_to_log,
)
from codat_authflow.storage.funnel import record_commit  # funnel index and transition metrics
from codat_authflow.storage.keys import Keys
from codat_authflow.storage.outbox import Outbox
from codat_authflow.storage.reconciliation import schedule_reconciliation
from state_machine import ANY_DATA, CodatEvent, CompanyState, Outcome, ReadinessGate, apply_events
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


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class CompanyStore:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        history_limit: int = 25,
        event_log_limit: int = 50,
        gate: ReadinessGate = ANY_DATA,
    ):
        self.redis = redis
        self.keys = keys
        self.gate = gate
        self.history_limit = history_limit
        self.event_log_limit = event_log_limit
        self.outbox = Outbox(redis, keys)

    def get(self, company_id: str) -> CompanyRecord | None:
        raw = self.redis.get(self.keys.company(company_id))
        return decode_record(raw) if raw is not None else None

    def events(self, company_id: str) -> list[tuple[CodatEvent, str]]:
        """The company's logged events, oldest first, with when each was
        applied; at most `event_log_limit` (the newest)."""
        record = self.get(company_id)
        return [event_from_log(e, company_id) for e in record.events] if record else []

    def state_counts(self) -> dict[str, int]:
        counts = self.redis.hgetall(self.keys.state_counts)
        return {k.decode(): int(v) for k, v in counts.items()}

    def apply(
        self,
        events_by_company: Mapping[str, Sequence[CodatEvent]],
        *,
        also: Callable[[Pipeline, set[str]], None] | None = None,
        now: Callable[[], str] = utc_now,
    ) -> Applied:
        """Apply each company's events and commit all companies at once.

        `also(pipe, committed_company_ids)` adds commands to the same MULTI
        (the inbox acknowledgement), so they commit with the state or not at
        all. The notifications the changes cause are appended to the outbox in
        the same transaction. A company whose events make the state machine
        raise is left out of the commit and reported in `failed`; the others
        still commit.
        """
        company_ids = sorted(events_by_company)
        keys = [self.keys.company(cid) for cid in company_ids]
        for _attempt in range(MAX_ATTEMPTS):
            with self.redis.pipeline(transaction=True) as pipe:
                try:
                    if keys:
                        pipe.watch(*keys)
                    raw_records = pipe.mget(keys) if keys else []
                    stamp = now()
                    outcomes, records, failed, notes, writes = {}, {}, {}, {}, []
                    for company_id, raw in zip(company_ids, raw_records, strict=True):
                        before = (
                            decode_record(raw)
                            if raw is not None
                            else CompanyRecord.new(company_id, stamp)
                        )
                        events = events_by_company[company_id]
                        try:
                            outcome = apply_events(
                                before.facts, events, self.gate, start=before.state
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
                            writes.append((company_id, raw is None, before, after))
                    pipe.multi()
                    for company_id, is_new, before, after in writes:
                        pipe.set(self.keys.company(company_id), encode_record(after))
                        schedule_reconciliation(pipe, company_id, after.state, stamp, keys=self.keys, previous=before.state)  # reconciliation index  # noqa: E501 # fmt: skip
                        record_commit(pipe, self.keys, company_id, is_new=is_new, transitions=outcomes[company_id].transitions, stamp=stamp)  # funnel index, metrics  # noqa: E501 # fmt: skip
                        if is_new:
                            pipe.hincrby(self.keys.state_counts, after.state.value, 1)
                        elif after.state != before.state:
                            pipe.hincrby(self.keys.state_counts, before.state.value, -1)
                            pipe.hincrby(self.keys.state_counts, after.state.value, 1)
                        for notification in notes[company_id]:
                            self.outbox.append(pipe, notification, stamp)
                    if also is not None:
                        also(pipe, set(outcomes))
                    pipe.execute()
                    return Applied(
                        outcomes=outcomes,
                        records=records,
                        failed=failed,
                        notifications={c: n for c, n in notes.items() if n and c in outcomes},
                    )
                except WatchError:
                    log.info("company.write_conflict", attempt=_attempt + 1, companies=len(keys))
                    # Back off a little, at random: writers that collided do
                    # not collide again in lockstep on a hot company.
                    time.sleep(random.uniform(0, 0.002 * (_attempt + 1)))
                    continue
        raise ConcurrencyConflict(f"gave up after {MAX_ATTEMPTS} conflicting attempts")

    def _record_after(
        self,
        before: CompanyRecord,
        outcome: Outcome,
        events: Sequence[CodatEvent],
        stamp: str,
    ) -> CompanyRecord:
        if outcome.facts == before.facts and outcome.state == before.state:
            return before  # duplicates and stale events: nothing to keep
        logged = before.events + tuple(event_to_log(e, stamp) for e in events)
        history = before.history + tuple(HistoryEntry.of(t, stamp) for t in outcome.transitions)
        reached_ready = any(t.to_state == CompanyState.READY for t in outcome.transitions)
        return replace(
            before,
            facts=outcome.facts,
            state=outcome.state,
            history=history[-self.history_limit :],
            updated_at=stamp,
            first_ready_at=before.first_ready_at or (stamp if reached_ready else None),
            ready_connections=ready_connections(outcome, before.ready_connections),
            events=logged[-self.event_log_limit :] if self.event_log_limit else (),
        )
