"""The reconciliation index: which companies sit in `linking`, `linked` or
`syncing`, and since when.

One sorted set per state, `{p}:reconcile:{state}`, member = company id,
score = the epoch second the company's clock started in that state: when it
entered the state, or when reconciliation last confirmed it still there.
A company is due for reconciliation once `score + threshold(state)` has
passed, so within a set the score order *is* the deadline order, and the
reconciliation job reads only the due head of each set
(`ZRANGEBYSCORE set -inf now-threshold LIMIT`), never every company.
Keeping the start rather than the deadline in the score lets the thresholds
(`RECONCILE_*_AFTER_SECONDS`) change without re-indexing.

`schedule_reconciliation` maintains the sets from inside
`CompanyUpdates.apply`'s MULTI, so a company's index entry commits with the
state that caused it, whoever applied the events (webhook drain, API,
reconciliation).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from redis import Redis
from redis.client import Pipeline

from codat_authflow.storage.keys import Keys
from state_machine import CompanyState

TRACKED_STATES = (CompanyState.LINKING, CompanyState.LINKED, CompanyState.SYNCING)


def index_key(keys: Keys, state: CompanyState | str) -> str:
    return keys.reconcile_index(CompanyState(state).value)


def stamp_epoch(stamp: str) -> float:
    """`CompanyStore`'s UTC stamp (`2026-01-05T09:00:00.000000Z`) to epoch seconds."""
    return datetime.fromisoformat(stamp).timestamp()


def schedule_reconciliation(
    pipe: Pipeline,
    company_id: str,
    state: CompanyState | str,
    now: str,
    *,
    keys: Keys,
    previous: CompanyState | str | None = None,
) -> None:
    """Queue on `pipe` (inside the MULTI that writes the company) the index
    change for a company now in `state`, as of the store's stamp `now`.

    `previous` is the state before this write, None for a new company. A write
    that leaves the state unchanged queues nothing: the clock keeps running
    from when the company entered the state. Entering a tracked state starts
    its clock at `now`; leaving them all removes the company from the index.
    """
    state = CompanyState(state)
    if previous is not None and CompanyState(previous) == state:
        return
    for tracked in TRACKED_STATES:
        if tracked != state:
            pipe.zrem(index_key(keys, tracked), company_id)
    if state in TRACKED_STATES:
        pipe.zadd(index_key(keys, state), {company_id: stamp_epoch(now)})


class ReconciliationIndex:
    def __init__(self, redis: Redis, keys: Keys):
        self.redis = redis
        self.keys = keys

    def due(self, state: CompanyState, started_before: float, limit: int) -> list[str]:
        """Companies in `state` whose clock started at or before `started_before`,
        longest-waiting first."""
        raw = self.redis.zrangebyscore(
            index_key(self.keys, state), "-inf", started_before, start=0, num=limit
        )
        return [member.decode() for member in raw]

    def started(self, company_id: str, state: CompanyState) -> float | None:
        score = self.redis.zscore(index_key(self.keys, state), company_id)
        return float(score) if score is not None else None

    def restart(self, company_id: str, state: CompanyState, epoch: float) -> None:
        """Restart the clock of a company still indexed under `state` (no-op if
        a concurrent write has moved it since)."""
        if state in TRACKED_STATES:
            self.redis.zadd(index_key(self.keys, state), {company_id: epoch}, xx=True)

    def put(self, company_id: str, state: CompanyState, epoch: float) -> None:
        """Index a company under `state` whatever its current entry."""
        with self.redis.pipeline(transaction=True) as pipe:
            for tracked in TRACKED_STATES:
                if tracked != state:
                    pipe.zrem(index_key(self.keys, tracked), company_id)
            if state in TRACKED_STATES:
                pipe.zadd(index_key(self.keys, state), {company_id: epoch})
            pipe.execute()

    def remove(self, company_id: str) -> None:
        with self.redis.pipeline(transaction=True) as pipe:
            for tracked in TRACKED_STATES:
                pipe.zrem(index_key(self.keys, tracked), company_id)
            pipe.execute()

    def sizes(self) -> dict[str, int]:
        with self.redis.pipeline(transaction=False) as pipe:
            for tracked in TRACKED_STATES:
                pipe.zcard(index_key(self.keys, tracked))
            counts = pipe.execute()
        return {tracked.value: int(n) for tracked, n in zip(TRACKED_STATES, counts, strict=True)}

    def rebuild(self, records: Iterable[tuple[str, CompanyState, str]]) -> int:
        """Index `(company_id, state, updated_at)` triples from a one-off scan
        (for companies stored before the index existed). Companies already
        indexed keep their clock. Returns the number of companies indexed."""
        indexed = 0
        for company_id, state, updated_at in records:
            if state not in TRACKED_STATES:
                continue
            self.redis.zadd(
                index_key(self.keys, state), {company_id: stamp_epoch(updated_at)}, nx=True
            )
            indexed += 1
        return indexed
