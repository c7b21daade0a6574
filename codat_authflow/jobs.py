"""Asking RQ for our jobs, by name.

The job functions live in `workers/` (the entrypoint); the web tier, the
services and the clock only ever queue them by their dotted name, so nothing
here imports `workers`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from redis import Redis
from redis.client import Pipeline
from rq import Queue, Retry

DRAIN_JOB = "workers.jobs.drain_inbox"
DRAIN_JOB_TIMEOUT_SECONDS = 60  # a drain stops reading after DRAIN_MAX_SECONDS
DELIVER_JOB = "workers.notify.deliver"  # one attempt (jobs queued before the pump existed)
DELIVER_JOB_TIMEOUT_SECONDS = 20  # the HTTP exchange itself is capped at 10 s
PUMP_JOB = "workers.notify.pump"
# A pump claims for at most DELIVERY_PUMP_MAX_SECONDS (<= 30) and never waits
# for an attempt still in flight when it hands over.
PUMP_JOB_TIMEOUT_SECONDS = 60


def enqueue_pump(redis: Redis, queue_name: str, *, at: float | None = None) -> None:
    """Queue a delivery pump (codat_authflow/delivery/pump.py), now (callers
    hold the pump-scheduled flag: `codat_authflow.delivery.attempts.request_pump`)
    or at the time `at` (RQ's scheduler: a retry or a breaker's probe)."""
    queue = Queue(queue_name, connection=redis)
    job = queue.create_job(
        PUMP_JOB,
        timeout=PUMP_JOB_TIMEOUT_SECONDS,
        result_ttl=60,  # not 0: see enqueue_attempt
        failure_ttl=7 * 24 * 3600,
        description="send due deliveries to subscribers",
        # A pump whose worker died is handed back by RQ; the deliveries it had
        # claimed come back to the schedule when their lease ends either way.
        retry=Retry(max=3, interval=[1, 5, 30]),
    )
    if at is None:
        queue.enqueue_job(job)
    else:
        queue.schedule_job(job, datetime.fromtimestamp(at, UTC))


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


def enqueue_attempt(queue: Queue, pipe: Pipeline, delivery_id_: str, *, delay: float) -> None:
    """Queue one delivery attempt in `pipe` (already in MULTI), now or after `delay` s."""
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
