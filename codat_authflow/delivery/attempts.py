"""One attempt at a delivery, its retry schedule, and replays of dead letters.

On failure the next attempt follows Codat's own schedule (at once, 5 s,
5 min, 30 min, 2 h, 5 h, 10 h, 10 h, with 10 % jitter;
DELIVERY_RETRY_SCHEDULE) through RQ's scheduler, or the delivery moves to the
dead letters after the last one. A subscription failing continuously for 5
days is disabled.

An attempt that never finishes (its worker killed, or RQ's job timeout) still
counts: the delivery records when the exchange started, so the job RQ hands
back records it as a failed attempt and schedules the retry; and the clock's
sweep (`sweep_deliveries`) reschedules any pending delivery whose job was lost
altogether.
"""

from __future__ import annotations

import random
import time
from dataclasses import replace

import httpx
import structlog
from rq import Queue

from codat_authflow.bootstrap import Services
from codat_authflow.delivery.sender import send
from codat_authflow.jobs import DELIVER_JOB_TIMEOUT_SECONDS, enqueue_attempt
from codat_authflow.observability.metrics import record_delivery
from codat_authflow.storage.deliveries import Attempt, Delivery

log = structlog.get_logger(__name__)

JITTER = 0.1
INTERRUPTED = "interrupted: the attempt did not finish (worker killed or job timed out)"
# A pending delivery whose attempt was due (or started) this long ago has lost
# its job: longer than a job may run plus RQ's hand-back intervals (1+5+30 s).
LOST_AFTER_SECONDS = 4 * DELIVER_JOB_TIMEOUT_SECONDS + 60


def attempt_delivery(ctx: Services, delivery_id_: str, *, client: httpx.Client) -> str:
    delivery = ctx.deliveries.get(delivery_id_)
    if delivery is None or delivery.status != "pending":
        return delivery.status if delivery else "missing"
    bound = log.bind(
        delivery_id=delivery.id,
        notification_id=delivery.notification_id,
        notification_type=delivery.type,
        subscription_id=delivery.subscription_id,
        company_id=delivery.company_id,
    )
    subscription = ctx.subscriptions.get(delivery.subscription_id)
    now = time.time()
    if subscription is None:
        return _finish(ctx, replace(delivery, status="cancelled"), bound, "subscription deleted")
    if not subscription.enabled:
        attempt = Attempt(now, None, 0, "subscription disabled")
        return _finish(
            ctx, replace(delivery.with_attempt(attempt), status="dead"), bound, "disabled"
        )

    if delivery.attempt_started_at is not None:  # this job's last run was killed mid-attempt
        started = delivery.attempt_started_at
        interrupted = Attempt(started, None, int(max(0.0, now - started) * 1000), INTERRUPTED)
        return _failed(ctx, subscription.id, delivery.with_attempt(interrupted), bound, now)

    with ctx.redis.pipeline(transaction=True) as pipe:
        ctx.deliveries.save(pipe, replace(delivery, attempt_started_at=now))
        pipe.execute()
    result = send(
        client,
        subscription.url,
        delivery.body,
        delivery.notification_id,
        subscription.signing_secrets(now),
        allow_private=ctx.settings.allow_private_subscriber_urls,
    )
    attempted = delivery.with_attempt(
        Attempt(now, result.status_code, result.latency_ms, result.error)
    )
    if result.ok:
        ctx.subscriptions.record_success(subscription.id)
        return _finish(ctx, replace(attempted, status="delivered", next_attempt_at=None), bound)
    return _failed(ctx, subscription.id, attempted, bound, time.time())


def _failed(ctx: Services, subscription_id: str, attempted: Delivery, bound, now: float) -> str:
    """After a failed attempt (the last of `attempted.attempts`): the retry, or the dead letters."""
    if ctx.subscriptions.record_failure(subscription_id, now):
        bound.warning("subscription.disabled", reason="failing for 5 days")
    number = len(attempted.attempts) - attempted.round_start
    schedule = ctx.settings.delivery_schedule
    if number >= len(schedule):
        return _finish(ctx, replace(attempted, status="dead", next_attempt_at=None), bound)
    delay = schedule[number] * (1 + random.uniform(-JITTER, JITTER))
    last = attempted.attempts[-1]
    _schedule(ctx, replace(attempted, next_attempt_at=now + delay, attempt_started_at=None), delay)
    record_delivery(ctx.redis, ctx.store.keys.prefix, "retry_scheduled")
    bound.warning(
        "delivery.attempt_failed",
        attempt=number,
        status_code=last.status_code,
        error=last.error,
        retry_in_seconds=round(delay, 1),
    )
    return "pending"


def _schedule(ctx: Services, delivery: Delivery, delay: float) -> None:
    """Save `delivery` and queue its next attempt in `delay` s, in one transaction."""
    queue = Queue(ctx.settings.delivery_queue_name, connection=ctx.redis)
    with ctx.redis.pipeline(transaction=True) as pipe:
        pipe.multi()  # explicit: RQ's enqueue expects a pipeline already in MULTI
        ctx.deliveries.save(pipe, delivery)
        enqueue_attempt(queue, pipe, delivery.id, delay=delay)
        pipe.execute()


def sweep_deliveries(ctx: Services, *, now: float | None = None) -> list[str]:
    """The clock's safety net: pending deliveries whose job was lost (due or
    started more than LOST_AFTER_SECONDS ago). One killed mid-attempt gets
    that attempt recorded as failed and its retry scheduled; one whose queued
    job vanished is queued again. Dead letters whose record expired are
    pruned. Returns the ids rescheduled."""
    now = time.time() if now is None else now
    ctx.deliveries.prune_dead_letters(now)
    rescheduled = []
    for delivery in ctx.deliveries.overdue(now - LOST_AFTER_SECONDS):
        bound = log.bind(delivery_id=delivery.id, subscription_id=delivery.subscription_id)
        if delivery.attempt_started_at is not None:
            started = delivery.attempt_started_at
            interrupted = Attempt(started, None, int((now - started) * 1000), INTERRUPTED)
            _failed(ctx, delivery.subscription_id, delivery.with_attempt(interrupted), bound, now)
        else:
            _schedule(ctx, replace(delivery, next_attempt_at=now), 0)
            bound.warning("delivery.rescheduled", reason="its job was lost")
        rescheduled.append(delivery.id)
    return rescheduled


def _finish(ctx: Services, delivery: Delivery, bound, reason: str | None = None) -> str:
    delivery = replace(delivery, attempt_started_at=None)
    with ctx.redis.pipeline(transaction=True) as pipe:
        pipe.multi()  # explicit: RQ's enqueue expects a pipeline already in MULTI
        ctx.deliveries.save(pipe, delivery)
        pipe.execute()
    record_delivery(ctx.redis, ctx.store.keys.prefix, delivery.status)  # delivered/dead/cancelled
    last = delivery.attempts[-1] if delivery.attempts else None
    event = {"delivered": "delivery.delivered", "dead": "delivery.dead_lettered"}.get(
        delivery.status, "delivery.cancelled"
    )
    (bound.info if delivery.status == "delivered" else bound.warning)(
        event,
        attempts=len(delivery.attempts),
        status_code=last.status_code if last else None,
        latency_ms=last.latency_ms if last else None,
        reason=reason or (last.error if last else None),
    )
    return delivery.status


def replay_dead_letters(
    ctx: Services,
    *,
    subscription_id: str | None = None,
    company_id: str | None = None,
    since: float | None = None,
    until: float | None = None,
) -> list[str]:
    """Send dead-lettered deliveries again, from a fresh retry schedule.
    Returns the ids replayed."""
    dead = ctx.deliveries.dead_letters(
        subscription_id=subscription_id, company_id=company_id, since=since, until=until
    )
    queue = Queue(ctx.settings.delivery_queue_name, connection=ctx.redis)
    replayed = []
    for delivery in dead:
        revived = replace(
            delivery,
            status="pending",
            next_attempt_at=time.time(),
            replays=delivery.replays + 1,
            round_start=len(delivery.attempts),
        )
        with ctx.redis.pipeline(transaction=True) as pipe:
            pipe.multi()
            ctx.deliveries.save(pipe, revived)
            enqueue_attempt(queue, pipe, revived.id, delay=0)
            pipe.execute()
        replayed.append(revived.id)
        record_delivery(ctx.redis, ctx.store.keys.prefix, "replayed")
        log.info(
            "delivery.replayed",
            delivery_id=revived.id,
            company_id=revived.company_id,
            subscription_id=revived.subscription_id,
        )
    return replayed
