"""`python -m workers.clock`: RQ's cron scheduler (the Procfile's `clock:`).

Every `SWEEP_INTERVAL_SECONDS` it queues a drain job. Receivers already queue
one whenever webhooks arrive; the sweep is what guarantees progress when they
stop arriving: entries a killed worker left pending, or a webhook stored just
before its receiver died without queueing a drain.
"""

from __future__ import annotations

import sys

from rq.cron import CronScheduler

from runtime.logs import configure_logging
from runtime.settings import ConfigError, Settings
from workers.context import current
from workers.jobs import drain_inbox
from workers.scheduling import DRAIN_JOB_TIMEOUT_SECONDS

SWEEP_INTERVAL_SECONDS = 10


def main() -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"clock: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, development=settings.development)
    scheduler = CronScheduler(connection=current().redis, logging_level=settings.log_level)
    scheduler.register(
        drain_inbox,
        settings.queue_name,
        interval=SWEEP_INTERVAL_SECONDS,
        job_timeout=DRAIN_JOB_TIMEOUT_SECONDS,
        result_ttl=60,
        name="sweep-inbox",
    )
    scheduler.start()
    return 0


if __name__ == "__main__":
    sys.exit(main())
