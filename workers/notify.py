"""Notifying subscribers: relay the outbox into deliveries, then deliver them.

`relay_outbox` turns each committed notification into one delivery per
matching subscription. Creating the deliveries, queueing their jobs and
acknowledging the outbox entry happen in one Redis transaction; delivery ids
are derived from (notification, subscription), so a relay that runs twice
creates nothing twice.

`deliver` makes one attempt. On failure it schedules the next attempt on
Codat's own schedule (at once, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, with
10 % jitter; DELIVERY_RETRY_SCHEDULE) through RQ's scheduler, or moves the delivery to the dead
letters after the last one. A subscription failing continuously for 5 days is
disabled.
"""

from __future__ import annotations

import random
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import cache

import httpx
import structlog
from redis.exceptions import WatchError
from rq import Queue, Retry

from codat_authflow.bootstrap import Services
from codat_authflow.delivery.sender import make_client, send
from codat_authflow.observability.metrics import record_delivery
from codat_authflow.storage.deliveries import Attempt, Delivery, delivery_id
from codat_authflow.storage.outbox import Outbox
from codat_authflow.storage.streams import StreamEntry, consumer_name
from workers.context import current

log = structlog.get_logger(__name__)

DELIVER_JOB = "workers.notify.deliver"
DELIVER_JOB_TIMEOUT_SECONDS = 20  # the HTTP exchange itself is capped at 10 s
RELAY_BATCH = 200
JITTER = 0.1


def relay(ctx: Services) -> int:
    """Relay pending outbox entries; returns how many deliveries were created."""
    outbox = ctx.store.outbox
    consumer = consumer_name()
    created = 0
    entries = outbox.reclaim_abandoned(
        consumer,
        min_idle_ms=ctx.settings.inbox_visibility_timeout_seconds * 1000,
        max_deliveries=ctx.settings.inbox_max_deliveries,
        count=RELAY_BATCH,
    )
    while True:
        if not entries:
            entries = outbox.read_new(consumer, RELAY_BATCH)
        if not entries:
            return created
        created += _relay_batch(ctx, outbox, entries)
        entries = []


def _relay_batch(ctx: Services, outbox: Outbox, entries: list[StreamEntry]) -> int:
    subscriptions = [s for s in ctx.subscriptions.all() if s.enabled]
    now = time.time()
    planned: list[Delivery] = []
    for entry in entries:
        envelope_bytes = entry.fields[b"envelope"].decode()
        notification_id, kind = entry.text("id"), entry.text("type")
        for subscription in subscriptions:
            if subscription.wants(kind):
                planned.append(
                    Delivery(
                        id=delivery_id(notification_id, subscription.id),
                        subscription_id=subscription.id,
                        notification_id=notification_id,
                        type=kind,
                        company_id=entry.text("company_id"),
                        body=envelope_bytes,
                        created_at=now,
                    )
                )
    queue = Queue(ctx.settings.delivery_queue_name, connection=ctx.redis)
    keys = [ctx.deliveries.key(d.id) for d in planned]
    with ctx.redis.pipeline(transaction=True) as pipe:
        while True:
            try:
                if keys:
                    pipe.watch(*keys)
                existing = pipe.mget(keys) if keys else []
                fresh = [d for d, raw in zip(planned, existing, strict=True) if raw is None]
                pipe.multi()
                for delivery in fresh:
                    ctx.deliveries.save(pipe, delivery, new=True)
                    _enqueue_attempt(queue, pipe, delivery.id, delay=0)
                outbox.acknowledge(pipe, [e.entry_id for e in entries])
                pipe.execute()
                break
            except WatchError:
                continue
    for delivery in fresh:
        log.info(
            "delivery.created",
            delivery_id=delivery.id,
            notification_id=delivery.notification_id,
            notification_type=delivery.type,
            subscription_id=delivery.subscription_id,
            company_id=delivery.company_id,
        )
    return len(fresh)


def _enqueue_attempt(queue: Queue, pipe, delivery_id_: str, *, delay: float) -> None:
    job = queue.create_job(
        DELIVER_JOB,
        args=(delivery_id_,),
        timeout=DELIVER_JOB_TIMEOUT_SECONDS,
        # Not 0: RQ deletes a job with result_ttl=0 by reading every execution
        # its registry lists, and one that died with its worker stays listed a
        # minute after its record expired, so a handed-back job that had done
        # its work failed there ("Execution ... not found in Redis").
        result_ttl=60,
        failure_ttl=7 * 24 * 3600,
        description=f"deliver {delivery_id_}",
        # Only for a worker that dies mid-attempt: RQ hands the job back.
        # HTTP failures are retried by `deliver` itself, on Codat's schedule.
        retry=Retry(max=3, interval=[1, 5, 30]),
    )
    if delay <= 0:
        queue.enqueue_job(job, pipeline=pipe)
    else:
        queue.schedule_job(job, _in(delay), pipeline=pipe)


def _in(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


@cache
def _client() -> httpx.Client:
    return make_client()


def deliver(delivery_id_: str) -> str:
    """RQ job: one attempt at one delivery. Returns the delivery's status."""
    return attempt_delivery(current(), delivery_id_, client=_client())


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
        _enqueue_attempt(queue, pipe, delivery.id, delay=delay)
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
            _enqueue_attempt(queue, pipe, revived.id, delay=0)
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
