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
retried, or interrupted: Redis went away during the job), and counts in the
`authflow_rq_jobs` metric; the lines the job itself logs carry its `job_id`.
"""

from __future__ import annotations

import threading
import time

import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import worker_registration
from rq.job import Job, JobStatus
from rq.scheduler import RQScheduler
from rq.worker import SimpleWorker

from codat_authflow.observability.metrics import record_job
from codat_authflow.redis_wait import RedisUnavailable

log = structlog.get_logger("authflow.job")

ABANDONED_GRACE_SECONDS = 5


class AuthflowScheduler(RQScheduler):
    """RQ's scheduler process (delivery retries, handed-back jobs with a
    retry interval), which ends quietly when Redis goes away instead of
    printing a traceback to stderr: the worker starts it again (its
    maintenance, or its next run) once Redis is back, under the same name,
    so it refreshes the locks it held."""

    def work(self) -> None:
        try:
            super().work()
        except (RedisConnectionError, RedisTimeoutError):
            self.log.info("Scheduler %s: Redis unavailable, stopping", self.name)


class AuthflowWorker(SimpleWorker):
    """`stopping` is set by SIGTERM/SIGINT (RQ's warm shutdown), so the
    caller can tell a stop from a `work()` that ended because Redis went away.

    Registration: a heartbeat keeps the worker's key for `worker_ttl` seconds
    (RQ_WORKER_TTL_SECONDS), not RQ's `worker_ttl + 60`, so a SIGKILLed idle
    worker leaves the registry that soon after its last heartbeat (a busy one:
    job timeout + ABANDONED_GRACE_SECONDS after the job started). A heartbeat
    that finds its key gone (expired during an outage, or a Redis that lost
    data) registers the worker again, so a live worker is never invisible."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stopping = threading.Event()

    def request_stop(self, signum, frame):
        self.stopping.set()
        super().request_stop(signum, frame)

    def heartbeat(self, timeout: int | None = None, pipeline=None) -> None:
        timeout = timeout or self.worker_ttl
        if pipeline is not None:
            super().heartbeat(timeout, pipeline=pipeline)
            return
        try:
            with self.connection.pipeline() as pipe:
                super().heartbeat(timeout, pipeline=pipe)
                created = pipe.execute()[0]  # HSET's new fields: 1 if the key was gone
                if created:
                    pipe.hset(self.key, mapping=self.serialize())
                    worker_registration.register(self, pipe)
                    pipe.expire(self.key, timeout)
                    pipe.execute()
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise RedisUnavailable(str(exc)) from exc

    def _start_scheduler(self, burst=False, logging_level="INFO", *args, **kwargs) -> None:
        """RQ's own, with `AuthflowScheduler` (no burst mode here)."""
        if burst:
            super()._start_scheduler(burst, logging_level, *args, **kwargs)
            return
        self.scheduler = AuthflowScheduler(
            self.queues,
            connection=self.connection,
            logging_level=logging_level if logging_level is not None else self.log.level,
            serializer=self.serializer,
        )
        self.scheduler.acquire_locks()
        if self.scheduler.acquired_locks:
            self.scheduler.start()

    def teardown(self) -> None:
        """RQ's teardown writes the worker's death to Redis first; with Redis
        away that raises and the pubsub thread (and its retry loop) would
        outlive this `work()`. Stop it without Redis then."""
        try:
            super().teardown()
        except (RedisError, RedisUnavailable):
            if self.pubsub_thread is not None:
                self.pubsub_thread.stop()
                self.pubsub_thread.join(timeout=1)
                self.pubsub.close()
                self.pubsub_thread = None
            raise

    def forget_previous_run(self) -> None:
        """Before `work()` again, with Redis back: mark the last run's
        registration dead (so the new one may register under the same name)
        and release the scheduler locks its scheduler process held (else no
        scheduler runs until they expire). Jobs that run was executing are
        left to RQ: its started-job registry hands them back (their `Retry`)
        once their heartbeat expires, job timeout + ABANDONED_GRACE_SECONDS
        after they started."""
        if self.birth_date is None:
            return  # never registered
        self.register_death()
        if self.scheduler is not None:
            self.scheduler.release_locks()
            self.scheduler = None

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
        ok, interrupted = False, False
        try:
            ok = super().perform_job(job, queue, execution)
            return ok
        except (RedisConnectionError, RedisTimeoutError, RedisUnavailable):
            interrupted = True  # RQ could not record the outcome: the job is still "started"
            raise
        finally:
            duration_ms = round((time.perf_counter() - started) * 1000, 2)
            self._log_job(job, queue.name, ok, duration_ms, interrupted)
            structlog.contextvars.clear_contextvars()

    def _log_job(
        self, job: Job, queue_name: str, ok: bool, duration_ms: float, interrupted: bool = False
    ) -> None:
        status = job.get_status(refresh=False)
        if interrupted:  # Redis went away: RQ's started-job registry hands it back later
            outcome, emit = "interrupted", log.warning
        elif ok and status == JobStatus.FINISHED:
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
