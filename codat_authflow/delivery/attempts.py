"""One attempt at a delivery, its retry schedule, and replays of dead letters.

On failure the next attempt follows Codat's own schedule (at once, 5 s,
5 min, 30 min, 2 h, 5 h, 10 h, 10 h, with 10 % jitter;
DELIVERY_RETRY_SCHEDULE) through RQ's scheduler, or the delivery moves to the
dead letters after the last one. A subscription failing continuously for 5
days is disabled.
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
from codat_authflow.jobs import enqueue_attempt
from codat_authflow.observability.metrics import record_delivery
from codat_authflow.storage.deliveries import Attempt, Delivery

log = structlog.get_logger(__name__)

JITTER = 0.1


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

    if ctx.subscriptions.record_failure(subscription.id, now):
        bound.warning("subscription.disabled", reason="failing for 5 days")
    number = len(attempted.attempts) - attempted.round_start
    schedule = ctx.settings.delivery_schedule
    if number >= len(schedule):
        return _finish(ctx, replace(attempted, status="dead", next_attempt_at=None), bound)
    delay = schedule[number] * (1 + random.uniform(-JITTER, JITTER))
    queue = Queue(ctx.settings.delivery_queue_name, connection=ctx.redis)
    with ctx.redis.pipeline(transaction=True) as pipe:
        pipe.multi()  # explicit: RQ's enqueue expects a pipeline already in MULTI
        ctx.deliveries.save(pipe, replace(attempted, next_attempt_at=now + delay))
        enqueue_attempt(queue, pipe, delivery.id, delay=delay)
        pipe.execute()
    record_delivery(ctx.redis, ctx.store.keys.prefix, "retry_scheduled")
    bound.warning(
        "delivery.attempt_failed",
        attempt=number,
        status_code=result.status_code,
        error=result.error,
        retry_in_seconds=round(delay, 1),
    )
    return "pending"


def _finish(ctx: Services, delivery: Delivery, bound, reason: str | None = None) -> str:
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
            next_attempt_at=None,
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
