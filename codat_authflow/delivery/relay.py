"""Relay the outbox into deliveries: one per matching subscription.

Creating the deliveries, putting them in the delivery schedule (due now) and
acknowledging the outbox entry happen in one Redis transaction; delivery ids
are derived from (notification, subscription), so a relay that runs twice
creates nothing twice. The same transaction sets the pump-scheduled flag
(SET NX); if it was not set, a pump job is queued (codat_authflow/delivery/pump.py).
"""

from __future__ import annotations

import random
import time

import structlog
from redis.exceptions import WatchError

from codat_authflow.bootstrap import Services
from codat_authflow.delivery.attempts import PUMP_FLAG_TTL_SECONDS
from codat_authflow.jobs import enqueue_pump
from codat_authflow.storage.deliveries import Delivery, delivery_id
from codat_authflow.storage.outbox import Outbox
from codat_authflow.storage.streams import StreamEntry, consumer_name

log = structlog.get_logger(__name__)

RELAY_BATCH = 200
# The per-subscription index keeps about KEEP_PER_SUBSCRIPTION deliveries: it
# is trimmed in one relay batch in ten (the API shows the latest 100).
TRIM_SHARE = 0.1


def relay(ctx: Services, *, reclaim: bool = True) -> int:
    """Relay pending outbox entries; returns how many deliveries were created.
    `reclaim=False` (a drain, right after its own commit): only new entries;
    entries a dead relay left pending wait for the drain's last relay."""
    outbox = ctx.store.outbox
    consumer = consumer_name()
    created = 0
    entries = []
    if reclaim:
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
        if len(entries) < RELAY_BATCH and not reclaim:
            return created  # read up to the end; what comes next has its own relay
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
                    ctx.deliveries.save(pipe, delivery, new=True, trim=False)
                if random.random() < TRIM_SHARE:
                    for subscription_id in {d.subscription_id for d in fresh}:
                        ctx.deliveries.trim_index(pipe, subscription_id)
                outbox.acknowledge(pipe, [e.entry_id for e in entries])
                if fresh:
                    pipe.set(ctx.store.keys.pump_scheduled, "1", nx=True, ex=PUMP_FLAG_TTL_SECONDS)
                pump_needed = pipe.execute()[-1] if fresh else False
                break
            except WatchError:
                continue
    if pump_needed:
        enqueue_pump(ctx.redis, ctx.settings.delivery_queue_name)
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
