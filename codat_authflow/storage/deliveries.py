"""Deliveries of notifications to subscriptions, with every attempt.

One JSON document per delivery (`{p}:delivery:{id}`), written only by the
pump that holds its lease; a sorted set per subscription lists its
deliveries (newest kept); a sorted set holds the dead letters; another,
`{p}:deliveries:pending`, is the schedule: every pending delivery, scored by
when its next attempt is due. A pump (codat_authflow/delivery/pump.py) claims
due ones with one Lua script (`claim`): their score becomes the end of a
lease, so no other pump takes them, and `{p}:deliveries:started` remembers
when each attempt began. An attempt whose pump died leaves both behind: when
the lease ends the delivery is due again, and the next claim reports that its
previous attempt was interrupted, which then counts as a failed attempt.
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


# KEYS: the schedule (sorted set), the started hash
# ARGV: now, lease (s), how many at most
_CLAIM_SCRIPT = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
if #ids == 0 then return {} end
local previous = redis.call('HMGET', KEYS[2], unpack(ids))
local leased, started, out = {}, {}, {}
local until_ = tostring(tonumber(ARGV[1]) + tonumber(ARGV[2]))
for i, id in ipairs(ids) do
  leased[#leased + 1] = until_
  leased[#leased + 1] = id
  started[#started + 1] = id
  started[#started + 1] = ARGV[1]
  out[#out + 1] = id
  out[#out + 1] = previous[i] or ''
end
redis.call('ZADD', KEYS[1], unpack(leased))
redis.call('HSET', KEYS[2], unpack(started))
return out
"""


# KEYS: a subscription's delivery index, the schedule, the started hash. ARGV: now
_RESUME_SCRIPT = """
local moved = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local score = redis.call('ZSCORE', KEYS[2], id)
  if score and tonumber(score) > tonumber(ARGV[1]) and redis.call('HEXISTS', KEYS[3], id) == 0 then
    redis.call('ZADD', KEYS[2], ARGV[1], id)
    moved = moved + 1
  end
end
return moved
"""


class DeliveryStore:
    def __init__(self, redis: Redis, keys: Keys):
        self.redis = redis
        self.keys = keys
        self._claim = redis.register_script(_CLAIM_SCRIPT)
        self._resume = redis.register_script(_RESUME_SCRIPT)

    def resume(self, subscription_id: str, now: float) -> int:
        """A subscription's breaker closed: its pending deliveries (of its
        latest KEEP_PER_SUBSCRIPTION) waiting in the schedule are due now,
        except any claimed at the moment. Returns how many."""
        return int(
            self._resume(
                keys=[self.index(subscription_id), self.pending, self.started], args=[repr(now)]
            )
        )

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

    @property
    def started(self) -> str:
        return self.keys.started_deliveries

    def save(
        self,
        pipe: Pipeline,
        delivery: Delivery,
        *,
        new: bool = False,
        trim: bool = True,
        schedule: bool = True,
    ) -> None:
        """Write `delivery` and keep the indexes in step: a finished one expires
        and leaves the schedule, a pending one is (re)scheduled at its `due_at`.
        `trim=False`: the caller trims the subscription's index itself (once
        per batch, `trim_index`); `schedule=False`: the caller updates the
        schedule and the started hash itself (in bulk)."""
        key = self.key(delivery.id)
        finished = delivery.status in ("delivered", "cancelled", "dead")
        # A plain SET also drops any TTL the key had (a replayed dead letter).
        pipe.set(key, delivery.to_json(), ex=FINISHED_TTL_SECONDS if finished else None)
        if new:
            index = self.index(delivery.subscription_id)
            pipe.zadd(index, {delivery.id: delivery.created_at})
            if trim:
                self.trim_index(pipe, delivery.subscription_id)
        if delivery.status == "dead":
            pipe.zadd(
                self.dead, {delivery.id: delivery.attempts[-1].at if delivery.attempts else 0}
            )
        elif not new and delivery.replays:  # only a replayed delivery was ever dead
            pipe.zrem(self.dead, delivery.id)
        if not schedule:
            return
        if finished:
            pipe.zrem(self.pending, delivery.id)
            if not new:
                pipe.hdel(self.started, delivery.id)
        else:
            pipe.zadd(self.pending, {delivery.id: delivery.due_at})
            if not new:
                pipe.hdel(self.started, delivery.id)

    def trim_index(self, pipe: Pipeline, subscription_id: str) -> None:
        pipe.zremrangebyrank(self.index(subscription_id), 0, -KEEP_PER_SUBSCRIPTION - 1)

    # -- the schedule ------------------------------------------------------------

    def claim(self, now: float, lease_seconds: float, limit: int) -> list[tuple[str, float | None]]:
        """Take up to `limit` due deliveries, atomically: each is re-scored to
        the end of its lease (no other pump takes it meanwhile) and its start
        recorded. Returns (id, start of an earlier attempt that never
        finished, or None) per delivery, earliest due first."""
        if limit <= 0:
            return []
        raw = self._claim(
            keys=[self.pending, self.started], args=[repr(now), repr(lease_seconds), limit]
        )
        out = []
        for i in range(0, len(raw), 2):
            previous = raw[i + 1]
            out.append((raw[i].decode(), float(previous) if previous else None))
        return out

    def defer(self, pipe: Pipeline, until: dict[str, float]) -> None:
        """Put claimed deliveries back in the schedule, due at the given
        times, without counting an attempt (a subscription at its limit or
        with its circuit breaker open)."""
        if until:
            pipe.zadd(self.pending, until, xx=True)
            pipe.hdel(self.started, *until)

    def unschedule(self, pipe: Pipeline, ids: list[str]) -> None:
        if ids:
            pipe.zrem(self.pending, *ids)
            pipe.hdel(self.started, *ids)

    def next_due(self) -> float | None:
        """When the earliest scheduled delivery is due (or its lease ends)."""
        first = self.redis.zrange(self.pending, 0, 0, withscores=True)
        return float(first[0][1]) if first else None

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
