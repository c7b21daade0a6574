"""Asking RQ for a drain job. Shared by the receiver and the drain job itself."""

from __future__ import annotations

from redis import Redis
from rq import Queue

DRAIN_JOB = "workers.jobs.drain_inbox"
DRAIN_JOB_TIMEOUT_SECONDS = 120


def enqueue_drain(redis: Redis, queue_name: str) -> None:
    Queue(queue_name, connection=redis).enqueue(
        DRAIN_JOB,
        job_timeout=DRAIN_JOB_TIMEOUT_SECONDS,
        result_ttl=60,
        failure_ttl=7 * 24 * 3600,
        description="drain the Codat webhook inbox",
    )
