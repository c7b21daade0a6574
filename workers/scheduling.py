"""Asking RQ for a drain job. Shared by the receiver and the drain job itself."""

from __future__ import annotations

from redis import Redis
from rq import Queue, Retry

DRAIN_JOB = "workers.jobs.drain_inbox"
DRAIN_JOB_TIMEOUT_SECONDS = 60  # a drain stops reading after DRAIN_MAX_SECONDS


def enqueue_drain(redis: Redis, queue_name: str) -> None:
    Queue(queue_name, connection=redis).enqueue(
        DRAIN_JOB,
        job_timeout=DRAIN_JOB_TIMEOUT_SECONDS,
        result_ttl=60,
        failure_ttl=7 * 24 * 3600,
        description="drain the Codat webhook inbox",
        # A drain whose worker died is handed back by RQ (the entries it held
        # are reclaimed from the stream either way); not left as failed.
        retry=Retry(max=3, interval=[1, 5, 30]),
    )


def sweep() -> None:
    """The clock's periodic job (workers/clock.py): queue a drain."""
    from workers.context import current

    ctx = current()
    enqueue_drain(ctx.redis, ctx.settings.queue_name)
