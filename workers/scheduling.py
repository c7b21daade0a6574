"""The clock's periodic job: queue a drain (`codat_authflow.jobs`) and
reschedule deliveries whose job was lost (`codat_authflow.delivery.attempts`)."""

from __future__ import annotations

from codat_authflow.delivery.attempts import sweep_deliveries
from codat_authflow.jobs import enqueue_drain


def sweep() -> None:
    """The clock's periodic job (workers/clock.py): queue a drain, and
    reschedule pending deliveries that no job will attempt any more."""
    from workers.context import current

    ctx = current()
    enqueue_drain(ctx.redis, ctx.settings.queue_name)
    sweep_deliveries(ctx)
