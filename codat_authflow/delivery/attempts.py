"""What an attempt does to a delivery: its retry schedule, dead letters, the
5-day disabling; committing results in bulk; replays of dead letters; the
clock's sweep. The pump (pump.py) claims due deliveries and makes the attempts.

On failure the next attempt follows Codat's own schedule (at once, 5 s,
5 min, 30 min, 2 h, 5 h, 10 h, 10 h, with 10 % jitter;
DELIVERY_RETRY_SCHEDULE): the delivery is re-scored in the schedule
(`{p}:deliveries:pending`), or moves to the dead letters after the last
attempt. A subscription failing continuously for 5 days is disabled.

An attempt that never finishes (its pump's worker killed) still counts: the
claim recorded when it started, so when its lease ends the next pump to claim
it records it as a failed attempt (`interrupted`) and schedules the retry.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

import httpx
import structlog

from codat_authflow.bootstrap import Services
from codat_authflow.delivery.sender import TOTAL_TIMEOUT_SECONDS, send
from codat_authflow.jobs import enqueue_pump
from codat_authflow.observability.metrics import (
    DELIVERIES,
    counter_update,
    queue_updates,
    record_delivery,
)
from codat_authflow.storage.deliveries import Attempt, Delivery
from codat_authflow.storage.subscriptions import Subscription

log = structlog.get_logger(__name__)

JITTER = 0.1
INTERRUPTED = "interrupted: the attempt did not finish (worker killed or job timed out)"
# A claimed delivery is leased this long: its attempt ends within
# TOTAL_TIMEOUT_SECONDS, and its pump records the outcome right after.
LEASE_SECONDS = TOTAL_TIMEOUT_SECONDS + 20
# The pump-scheduled flag: a running pump refreshes it; a dead one's expires.
PUMP_FLAG_TTL_SECONDS = 15


@dataclass(frozen=True)
class Settled:
    """A delivery after an attempt (or a decision not to attempt it)."""

    delivery: Delivery  # as it is saved
    outcome: str  # delivered | retry_scheduled | dead | cancelled
    reason: str | None = None
    retry_in: float | None = None

    @property
    def failed_attempt(self) -> bool:
        return self.outcome in ("retry_scheduled", "dead") and self.reason is None


def request_pump(ctx: Services) -> bool:
    """Queue a pump unless one is already scheduled (the flag, SET NX)."""
    flag = ctx.store.keys.pump_scheduled
    if not ctx.redis.set(flag, "1", nx=True, ex=PUMP_FLAG_TTL_SECONDS):
        return False
    enqueue_pump(ctx.redis, ctx.settings.delivery_queue_name)
    return True


def schedule_wakeup(ctx: Services, at: float) -> bool:
    """A pump that goes idle with a delivery due later (a retry, a breaker's
    probe) asks RQ's scheduler for a pump at that time, unless one is already
    asked for by then. (The clock's sweep is the safety net.)"""
    key = ctx.store.keys.pump_wakeup
    now = time.time()
    current = ctx.redis.get(key)
    if current is not None and float(current) <= at:
        return False
    ctx.redis.set(key, repr(at), ex=max(1, int(at - now) + 1))
    enqueue_pump(ctx.redis, ctx.settings.delivery_queue_name, at=at)
    return True


def settle_before_attempt(delivery: Delivery, subscription: Subscription | None, now: float):
    """Deleted subscription: cancelled; disabled: dead. Otherwise None."""
    if subscription is None:
        return Settled(replace(delivery, status="cancelled"), "cancelled", "subscription deleted")
    if not subscription.enabled:
        attempt = Attempt(now, None, 0, "subscription disabled")
        dead = replace(delivery.with_attempt(attempt), status="dead", next_attempt_at=None)
        return Settled(dead, "dead", "disabled")
    return None


def settle_attempt(ctx: Services, delivery: Delivery, attempt: Attempt, now: float) -> Settled:
    """After an attempt: delivered, the next retry, or the dead letters."""
    attempted = replace(delivery.with_attempt(attempt), attempt_started_at=None)
    if attempt.error is None and attempt.status_code is not None:
        return Settled(replace(attempted, status="delivered", next_attempt_at=None), "delivered")
    number = len(attempted.attempts) - attempted.round_start
    schedule = ctx.settings.delivery_schedule
    if number >= len(schedule):
        return Settled(replace(attempted, status="dead", next_attempt_at=None), "dead")
    delay = schedule[number] * (1 + random.uniform(-JITTER, JITTER))
    return Settled(
        replace(attempted, next_attempt_at=now + delay), "retry_scheduled", retry_in=delay
    )


def interrupted_attempt(started: float, now: float) -> Attempt:
    return Attempt(started, None, int(max(0.0, now - started) * 1000), INTERRUPTED)


def commit(
    ctx: Services,
    settled: Sequence[Settled],
    *,
    succeeded: Sequence[str] = (),
    count: bool = True,
) -> None:
    """Save the results: records, the schedule (finished ones leave it,
    retries are re-scored), the subscriptions in `succeeded` marked as not
    failing (their breaker closes), and (`count`) the metrics. Then log them.

    Deliveries that all succeeded need no transaction: each record is written
    before its schedule entry goes, and a claim that finds a finished record
    only drops the entry. A retry or a dead letter is one transaction, so an
    attempt is never both recorded and left to count as interrupted."""
    if not settled:
        return
    store = ctx.deliveries
    finished = [s.delivery.id for s in settled if s.delivery.status != "pending"]
    retries = {s.delivery.id: s.delivery.due_at for s in settled if s.delivery.status == "pending"}
    atomic = any(s.outcome != "delivered" for s in settled)
    with ctx.redis.pipeline(transaction=atomic) as pipe:
        for item in settled:
            store.save(pipe, item.delivery, schedule=False)
        store.unschedule(pipe, finished)
        if retries:
            pipe.zadd(store.pending, retries)
            pipe.hdel(store.started, *retries)
        for subscription_id in set(succeeded):
            ctx.subscriptions.record_success(subscription_id, pipe)
        if count:
            queue_updates(pipe, metric_updates(ctx, settled))
        pipe.execute()
    for item in settled:
        _log(item)


def metric_updates(ctx: Services, settled: Sequence[Settled]):
    outcomes = Counter(s.outcome for s in settled)
    prefix = ctx.store.keys.prefix
    return [counter_update(prefix, DELIVERIES, (o,), n) for o, n in outcomes.items()]


def _log(item: Settled) -> None:
    delivery = item.delivery
    bound = log.bind(
        delivery_id=delivery.id,
        notification_id=delivery.notification_id,
        notification_type=delivery.type,
        subscription_id=delivery.subscription_id,
        company_id=delivery.company_id,
    )
    last = delivery.attempts[-1] if delivery.attempts else None
    if item.outcome == "retry_scheduled":
        bound.warning(
            "delivery.attempt_failed",
            attempt=len(delivery.attempts) - delivery.round_start,
            status_code=last.status_code if last else None,
            error=last.error if last else None,
            retry_in_seconds=round(item.retry_in or 0.0, 1),
        )
        return
    event = {"delivered": "delivery.delivered", "dead": "delivery.dead_lettered"}.get(
        delivery.status, "delivery.cancelled"
    )
    (bound.info if delivery.status == "delivered" else bound.warning)(
        event,
        attempts=len(delivery.attempts),
        status_code=last.status_code if last else None,
        latency_ms=last.latency_ms if last else None,
        reason=item.reason or (last.error if last else None),
    )


def record_failures(ctx: Services, settled: Sequence[Settled], now: float) -> set[str]:
    """For each failed attempt: the 5-day disabling and the circuit breaker.
    Returns the subscriptions whose breaker is (still) open."""
    opened: set[str] = set()
    for item in settled:
        if not item.failed_attempt:
            continue
        subscription_id = item.delivery.subscription_id
        if ctx.subscriptions.record_failure(subscription_id, now):
            log.warning(
                "subscription.disabled",
                subscription_id=subscription_id,
                reason="failing for 5 days",
            )
        until = ctx.subscriptions.record_breaker_failure(
            subscription_id,
            now,
            threshold=ctx.settings.delivery_breaker_failures,
            cooldown_seconds=ctx.settings.delivery_breaker_cooldown_seconds,
        )
        if until is not None:
            opened.add(subscription_id)
            log.warning(
                "subscription.breaker_open", subscription_id=subscription_id, until=round(until, 3)
            )
    return opened


def attempt_delivery(ctx: Services, delivery_id_: str, *, client: httpx.Client) -> str:
    """One attempt at one delivery, now, whatever its schedule says (the
    `deliver` job of releases before the pump, tests and the cost model).
    Returns the delivery's status."""
    delivery = ctx.deliveries.get(delivery_id_)
    if delivery is None or delivery.status != "pending":
        return delivery.status if delivery else "missing"
    store = ctx.deliveries
    now = time.time()
    with ctx.redis.pipeline(transaction=True) as pipe:
        pipe.hget(store.started, delivery.id)
        pipe.zadd(store.pending, {delivery.id: now + LEASE_SECONDS}, xx=True)
        pipe.hset(store.started, delivery.id, repr(now))
        previous = pipe.execute()[0]
    subscription = ctx.subscriptions.get(delivery.subscription_id)
    settled = settle_before_attempt(delivery, subscription, now)
    if settled is None:
        started = float(previous) if previous else delivery.attempt_started_at
        if started is not None:  # an earlier attempt never finished: it counts
            settled = settle_attempt(ctx, delivery, interrupted_attempt(started, now), now)
        else:
            settled = settle_attempt(
                ctx, delivery, make_attempt(ctx, client, delivery, subscription), time.time()
            )
    commit(
        ctx,
        [settled],
        succeeded=[delivery.subscription_id] if settled.outcome == "delivered" else [],
    )
    record_failures(ctx, [settled], time.time())
    return settled.delivery.status


def make_attempt(
    ctx: Services, client: httpx.Client, delivery: Delivery, subscription: Subscription
) -> Attempt:
    """The signed POST itself (no Redis): its result as an Attempt."""
    now = time.time()
    result = send(
        client,
        subscription.url,
        delivery.body,
        delivery.notification_id,
        subscription.signing_secrets(now),
        allow_private=ctx.settings.allow_private_subscriber_urls,
    )
    error = None if result.ok else (result.error or "failed")
    return Attempt(now, result.status_code, result.latency_ms, error)


def ensure_pump(ctx: Services, now: float | None = None) -> bool:
    """If a delivery is due and no pump is scheduled, queue one. True if queued."""
    now = time.time() if now is None else now
    due = ctx.deliveries.next_due()
    if due is None or due > now:
        return False
    return request_pump(ctx)


def sweep_deliveries(ctx: Services, *, now: float | None = None) -> bool:
    """The clock's part: prune expired dead letters, and if a delivery is due
    (a retry, or one whose pump died and whose lease ended) while no pump is
    scheduled, queue one. Returns True if it queued a pump."""
    now = time.time() if now is None else now
    ctx.deliveries.prune_dead_letters(now)
    return ensure_pump(ctx, now)


def replay_dead_letters(
    ctx: Services,
    *,
    subscription_id: str | None = None,
    company_id: str | None = None,
    since: float | None = None,
    until: float | None = None,
) -> list[str]:
    """Send dead-lettered deliveries again, from a fresh retry schedule: each
    is put back in the schedule, due now. Returns the ids replayed."""
    dead = ctx.deliveries.dead_letters(
        subscription_id=subscription_id, company_id=company_id, since=since, until=until
    )
    replayed = []
    for delivery in dead:
        revived = replace(
            delivery,
            status="pending",
            next_attempt_at=time.time(),
            replays=delivery.replays + 1,
            round_start=len(delivery.attempts),
            attempt_started_at=None,
        )
        with ctx.redis.pipeline(transaction=True) as pipe:
            ctx.deliveries.save(pipe, revived)
            pipe.execute()
        replayed.append(revived.id)
        record_delivery(ctx.redis, ctx.store.keys.prefix, "replayed")
        log.info(
            "delivery.replayed",
            delivery_id=revived.id,
            company_id=revived.company_id,
            subscription_id=revived.subscription_id,
        )
    if replayed:
        request_pump(ctx)
    return replayed
