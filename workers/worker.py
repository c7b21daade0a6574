"""Our RQ worker class: RQ's non-forking SimpleWorker, with abandoned jobs
noticed in seconds rather than minutes.

A SimpleWorker runs the job in its own process and sends no heartbeat while
it does, so RQ registers a started job as alive for `timeout + 60 s`. RQ
enforces the job timeout itself, so a job still registered more than a few
seconds past its timeout can only belong to a worker that died (SIGKILL, OOM,
a lost machine). With a short grace and frequent maintenance
(RQ_MAINTENANCE_INTERVAL_SECONDS) such a job is handed back (its `Retry`) or
marked failed within about `timeout + 5 s + maintenance interval`.
"""

from __future__ import annotations

from rq.job import Job
from rq.worker import SimpleWorker

ABANDONED_GRACE_SECONDS = 5


class AuthflowWorker(SimpleWorker):
    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        ttl = super().get_heartbeat_ttl(job, working_time)
        if job.timeout and job.timeout > 0:
            return int(job.timeout) + ABANDONED_GRACE_SECONDS
        return ttl
