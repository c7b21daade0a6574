"""Deliveries of notifications to subscriptions, with every attempt.

One JSON document per delivery (`{p}:delivery:{id}`), written only by the job
currently responsible for it; a sorted set per subscription lists its
deliveries (newest kept); a sorted set holds the dead letters; another holds
the pending ones, scored by when their next attempt is due (or when the one
in flight started), so that the clock's sweep can find those whose job was
lost (codat_authflow/delivery/attempts.py, `sweep_deliveries`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace

from redis import Redis
from redis.client import Pipeline

from codat_authflow.storage.keys import Keys

KEEP_PER_SUBSCRIPTION = 1000
FINISHED_TTL_SECONDS = 30 * 24 * 3600
DEAD_LETTER_PAGE = 1000
# A dead letter's score is its last attempt, its record's TTL starts when it
# is saved just after: an hour covers the gap.
PRUNE_MARGIN_SECONDS = 3600


def delivery_id(notification_id: str, subscription_id: str) -> str:
    digest = hashlib.sha256(f"{notification_id}\x1f{subscription_id}".encode()).hexdigest()
    return f"dlv_{digest[:32]}"


@dataclass(frozen=True)
class Attempt:
    at: float
    status_code: int | None
    latency_ms: int
    error: str | None = None


@dataclass(frozen=True)
class Delivery:
    id: str
    subscription_id: str
    notification_id: str
    type: str
    company_id: str
    body: str  # the envelope, exactly as signed and sent
    created_at: float
    status: str = "pending"  # pending | delivered | dead | cancelled
    attempts: tuple[Attempt, ...] = field(default=())
    next_attempt_at: float | None = None
    replays: int = 0
    round_start: int = 0  # index of the first attempt since the last replay
    # Set just before the HTTP exchange, cleared with its outcome: a job that
    # finds it set was killed mid-attempt, which then counts as a failed one.
    attempt_started_at: float | None = None

    @property
    def due_at(self) -> float:
        """When this pending delivery's job should have started (or started)."""
        if self.attempt_started_at is not None:
            return self.attempt_started_at
        return self.next_attempt_at if self.next_attempt_at is not None else self.created_at

    def to_json(self) -> bytes:
        data = asdict(self)
        data["attempts"] = [asdict(a) for a in self.attempts]
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Delivery:
        data = json.loads(raw)
        data["attempts"] = tuple(Attempt(**a) for a in data.get("attempts", ()))
        return cls(**data)

    def with_attempt(self, attempt: Attempt) -> Delivery:
        return replace(self, attempts=(*self.attempts, attempt))


class DeliveryStore:
    def __init__(self, redis: Redis, keys: Keys):
        self.redis = redis
        self.keys = keys

    def key(self, delivery_id_: str) -> str:
        return self.keys.delivery(delivery_id_)

    def index(self, subscription_id: str) -> str:
        return self.keys.subscription_deliveries(subscription_id)

    @property
    def dead(self) -> str:
        return self.keys.dead_deliveries

    @property
    def pending(self) -> str:
        return self.keys.pending_deliveries

    def get(self, delivery_id_: str) -> Delivery | None:
        raw = self.redis.get(self.key(delivery_id_))
        return Delivery.from_json(raw) if raw is not None else None

    def get_many(self, ids: Iterable[str]) -> list[Delivery]:
        ids = list(ids)
        if not ids:
            return []
        return [Delivery.from_json(r) for r in self.redis.mget([self.key(i) for i in ids]) if r]

    def save(self, pipe: Pipeline, delivery: Delivery, *, new: bool = False) -> None:
        key = self.key(delivery.id)
        pipe.set(key, delivery.to_json())
        if new:
            index = self.index(delivery.subscription_id)
            pipe.zadd(index, {delivery.id: delivery.created_at})
            pipe.zremrangebyrank(index, 0, -KEEP_PER_SUBSCRIPTION - 1)
        if delivery.status == "dead":
            pipe.zadd(
                self.dead, {delivery.id: delivery.attempts[-1].at if delivery.attempts else 0}
            )
        else:
            pipe.zrem(self.dead, delivery.id)
        if delivery.status in ("delivered", "cancelled", "dead"):
            pipe.expire(key, FINISHED_TTL_SECONDS)
            pipe.zrem(self.pending, delivery.id)
        else:
            pipe.persist(key)
            pipe.zadd(self.pending, {delivery.id: delivery.due_at})

    def overdue(self, before: float, limit: int = 500) -> list[Delivery]:
        """Pending deliveries whose attempt was due (or started) before `before`."""
        ids = self.redis.zrangebyscore(self.pending, "-inf", before, start=0, num=limit)
        found = self.get_many(i.decode() for i in ids)
        gone = {i.decode() for i in ids} - {d.id for d in found}
        if gone:  # expired or deleted records: nothing left to sweep
            self.redis.zrem(self.pending, *gone)
        return [d for d in found if d.status == "pending" and d.due_at < before]

    def for_subscription(self, subscription_id: str, limit: int = 100) -> list[Delivery]:
        ids = [i.decode() for i in self.redis.zrevrange(self.index(subscription_id), 0, limit - 1)]
        return self.get_many(ids)

    def dead_letters(
        self,
        *,
        subscription_id: str | None = None,
        company_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 10_000,
    ) -> list[Delivery]:
        """Dead-lettered deliveries, filtered; the time range is on when they
        died. The filter applies before the limit: up to `limit` matching
        ones, oldest first. Index entries whose record has expired are pruned
        on the way."""
        found: list[Delivery] = []
        start = 0
        while len(found) < limit:
            ids = [
                i.decode()
                for i in self.redis.zrangebyscore(
                    self.dead,
                    since if since is not None else "-inf",
                    until if until is not None else "+inf",
                    start=start,
                    num=DEAD_LETTER_PAGE,
                )
            ]
            if not ids:
                break
            page = self.get_many(ids)
            gone = set(ids) - {d.id for d in page}
            if gone:  # their records expired: prune them with their record
                self.redis.zrem(self.dead, *gone)
            start += len(ids) - len(gone)
            found += [
                d
                for d in page
                if d.status == "dead"
                and (subscription_id is None or d.subscription_id == subscription_id)
                and (company_id is None or d.company_id == company_id)
            ]
        return found[:limit]

    def prune_dead_letters(self, now: float | None = None) -> int:
        """Drop the dead-letter entries of records that have expired (a dead
        record lives FINISHED_TTL_SECONDS from its death). Returns how many."""
        now = time.time() if now is None else now
        cutoff = now - FINISHED_TTL_SECONDS - PRUNE_MARGIN_SECONDS
        return int(self.redis.zremrangebyscore(self.dead, "-inf", cutoff))

    def forget_subscription(self, subscription_id: str) -> int:
        """After its subscription is deleted: its pending deliveries are
        cancelled (kept FINISHED_TTL_SECONDS, as any finished delivery) and
        its index expires with them. Returns how many were cancelled."""
        index = self.index(subscription_id)
        ids = [i.decode() for i in self.redis.zrange(index, 0, -1)]
        cancelled = 0
        with self.redis.pipeline(transaction=True) as pipe:
            for delivery in self.get_many(ids):
                if delivery.status == "pending":
                    self.save(
                        pipe,
                        replace(
                            delivery,
                            status="cancelled",
                            next_attempt_at=None,
                            attempt_started_at=None,
                        ),
                    )
                    cancelled += 1
            pipe.expire(index, FINISHED_TTL_SECONDS)
            pipe.execute()
        return cancelled
