"""The clock's periodic job: queue a drain (`codat_authflow.jobs`),
reschedule deliveries whose job was lost (`codat_authflow.delivery.attempts`)
and drop dead workers from RQ's registry (`codat_authflow.storage.rq_workers`)."""

from __future__ import annotations

from codat_authflow.delivery.attempts import sweep_deliveries
from codat_authflow.jobs import enqueue_drain
from codat_authflow.storage.rq_workers import prune_dead_workers


def sweep() -> None:
    """The clock's periodic job (workers/clock.py): queue a drain, and
    reschedule pending deliveries that no job will attempt any more."""
    from workers.context import current

    ctx = current()
    enqueue_drain(ctx.redis, ctx.settings.queue_name)
    sweep_deliveries(ctx)
    # Workers that died without unregistering leave RQ's sets once their key expired.
    prune_dead_workers(ctx.redis, (ctx.settings.queue_name, ctx.settings.delivery_queue_name))
