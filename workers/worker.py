"""Our RQ worker class: RQ's non-forking SimpleWorker, with abandoned jobs
noticed in seconds rather than minutes.

A SimpleWorker runs the job in its own process and sends no heartbeat while
it does, so RQ registers a started job as alive for `timeout + 60 s`. RQ
enforces the job timeout itself, so a job still registered more than a few
seconds past its timeout can only belong to a worker that died (SIGKILL, OOM,
a lost machine). With a short grace and frequent maintenance
(RQ_MAINTENANCE_INTERVAL_SECONDS) such a job is handed back (its `Retry`) or
marked failed within about `timeout + 5 s + maintenance interval`.

Every job also leaves one JSON log line, `{"event": "job", "job_id",
"function", "queue", "outcome", "duration_ms"}` (outcome: finished, failed,
or retried), and counts in the `authflow_rq_jobs` metric; the lines the job
itself logs carry its `job_id`.
"""

from __future__ import annotations

import time

import structlog
from rq.job import Job, JobStatus
from rq.worker import SimpleWorker

from codat_authflow.observability.metrics import record_job

log = structlog.get_logger("authflow.job")

ABANDONED_GRACE_SECONDS = 5


class AuthflowWorker(SimpleWorker):
    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        ttl = super().get_heartbeat_ttl(job, working_time)
        if job.timeout and job.timeout > 0:
            return int(job.timeout) + ABANDONED_GRACE_SECONDS
        return ttl

    @property
    def dequeue_timeout(self) -> int:
        # RQ blocks an idle worker in BLPOP for worker_ttl - 15 s (405 s) and runs
        # its maintenance (handing abandoned jobs back, taking over the scheduler
        # lock of a dead worker) only between pops. A pool with nothing queued
        # (`--queues deliveries` between notifications) must still wake up.
        return max(1, min(super().dequeue_timeout, int(self.maintenance_interval)))

    def perform_job(self, job: Job, queue, execution) -> bool:
        started = time.perf_counter()
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(job_id=job.id)
        ok = False
        try:
            ok = super().perform_job(job, queue, execution)
            return ok
        finally:
            self._log_job(job, queue.name, ok, round((time.perf_counter() - started) * 1000, 2))
            structlog.contextvars.clear_contextvars()

    def _log_job(self, job: Job, queue_name: str, ok: bool, duration_ms: float) -> None:
        status = job.get_status(refresh=False)
        if ok and status == JobStatus.FINISHED:
            outcome, emit = "finished", log.info
        elif status == JobStatus.FAILED:
            outcome, emit = "failed", log.error
        else:  # handed back for a retry (scheduled or queued again)
            outcome, emit = "retried", log.warning
        try:
            function = job.func_name
        except Exception:  # an undecodable job: RQ has already failed it
            function = "unknown"
        emit(
            "job",
            queue=queue_name,
            function=function,
            outcome=outcome,
            status=str(status.value if isinstance(status, JobStatus) else status),
            duration_ms=duration_ms,
        )
        record_job(self.connection, _prefix(), function, outcome)


def _prefix() -> str:
    from workers.context import current

    try:
        return current().settings.key_prefix
    except Exception:  # no configuration (a test worker): the default prefix
        return "authflow"
