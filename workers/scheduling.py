"""The clock's periodic job: queue a drain (`codat_authflow.jobs`)."""

from __future__ import annotations

from codat_authflow.jobs import enqueue_drain


def sweep() -> None:
    """The clock's periodic job (workers/clock.py): queue a drain."""
    from workers.context import current

    ctx = current()
    enqueue_drain(ctx.redis, ctx.settings.queue_name)
