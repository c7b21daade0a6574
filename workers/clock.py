"""`python -m workers.clock`: RQ's cron scheduler (the Procfile's `clock:`).

Every SWEEP_INTERVAL_SECONDS (10 by default) it runs `sweep`, which queues a
drain job. Receivers already queue one whenever webhooks arrive; the sweep is
what guarantees progress when they stop arriving: entries a killed worker
left pending, a webhook stored just before its receiver died without queueing
a drain, notifications committed by the API. (The cron job only enqueues, in
a millisecond, so that the drain itself gets the `Retry` a cron job lacks.)

It rides out Redis outages like the workers (codat_authflow/redis_wait.py):
it waits for Redis, at start and whenever RQ's loop ends on a lost
connection, and never exits for one.
"""

from __future__ import annotations

import signal
import sys
import threading

from redis.exceptions import RedisError
from rq.cron import CronScheduler
from rq.exceptions import StopRequested

from codat_authflow.logs import configure_logging
from codat_authflow.redis_wait import RedisWatch, quiet_rq_outage_lines, wait_for_redis
from codat_authflow.settings import settings_or_exit
from workers import reconcile
from workers.context import current
from workers.scheduling import sweep


class Clock(CronScheduler):
    """RQ's cron scheduler, told apart from a Redis outage when it stops:
    `stopping` is set by SIGTERM/SIGINT."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stopping = threading.Event()

    def _request_stop(self, signum, frame):
        self.stopping.set()
        super()._request_stop(signum, frame)


def main() -> int:
    settings = settings_or_exit("clock")  # problems: one line each, exit 2
    configure_logging(settings.log_level, development=settings.development)
    quiet_rq_outage_lines()
    redis = current().redis
    scheduler = Clock(connection=redis, logging_level=settings.log_level)
    scheduler.register(
        sweep,
        settings.queue_name,
        interval=settings.sweep_interval_seconds,
        job_timeout=10,
        result_ttl=60,
        name="sweep",
    )
    reconcile.register(
        scheduler, settings
    )  # RECONCILE_INTERVAL_SECONDS; codat_authflow/journey/reconcile.py
    watch = RedisWatch("clock")
    # Redis unreachable, at start or later (RQ's loop ends on the first failed
    # command): wait for it, then start again; the jobs' timings carry over, so
    # a sweep overdue during the outage runs at once.
    try:
        while not scheduler.stopping.is_set():
            _stop_on_signals(scheduler.stopping)  # until start() installs RQ's own
            if not wait_for_redis(redis, watch, scheduler.stopping):
                break
            try:
                scheduler.start()  # returns on SIGTERM/SIGINT
            except RedisError as exc:
                if not scheduler.stopping.is_set():
                    watch.lost(exc)
    except StopRequested:  # RQ's signal handler, after start() gave up
        pass
    return 0


def _stop_on_signals(stopping: threading.Event) -> None:
    def handler(signum, frame):
        stopping.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


if __name__ == "__main__":
    sys.exit(main())
