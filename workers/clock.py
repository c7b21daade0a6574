"""`python -m workers.clock`: RQ's cron scheduler (the Procfile's `clock:`).

Every SWEEP_INTERVAL_SECONDS (10 by default) it runs `sweep`, which queues a
drain job. Receivers already queue one whenever webhooks arrive; the sweep is
what guarantees progress when they stop arriving: entries a killed worker
left pending, a webhook stored just before its receiver died without queueing
a drain, notifications committed by the API. (The cron job only enqueues, in
a millisecond, so that the drain itself gets the `Retry` a cron job lacks.)
"""

from __future__ import annotations

import sys

from rq.cron import CronScheduler

from codat_authflow.logs import configure_logging
from codat_authflow.settings import settings_or_exit
from workers import reconcile
from workers.context import current
from workers.scheduling import sweep


def main() -> int:
    settings = settings_or_exit("clock")  # problems: one line each, exit 2
    configure_logging(settings.log_level, development=settings.development)
    scheduler = CronScheduler(connection=current().redis, logging_level=settings.log_level)
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
    scheduler.start()
    return 0


if __name__ == "__main__":
    sys.exit(main())
