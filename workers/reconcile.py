"""The reconciliation job, run by RQ's cron scheduler (`python -m workers.clock`)
every RECONCILE_INTERVAL_SECONDS on the inbox queue. See `codat_authflow.journey.reconcile`.

Each run is bounded (RECONCILE_BATCH_SIZE companies, RECONCILE_MAX_SECONDS),
so it never holds a worker long away from the webhook inbox; whatever is left
is due again at the next run. Without CODAT_API_KEY the job does nothing.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from rq.cron import CronScheduler

from codat_authflow.bootstrap import build_journey
from codat_authflow.journey.reconcile import reconcile_due
from codat_authflow.journey.service import Journey
from codat_authflow.settings import Settings
from workers.context import current

JOB_NAME = "reconcile"


@cache
def _journey() -> Journey:
    ctx = current()
    return build_journey(ctx)


def reconcile_due_companies() -> dict[str, Any]:
    """RQ job: reconcile the companies past their deadline."""
    return reconcile_due(_journey())


def register(scheduler: CronScheduler, settings: Settings) -> None:
    scheduler.register(
        reconcile_due_companies,
        settings.queue_name,
        interval=settings.reconcile_interval_seconds,
        job_timeout=settings.reconcile_max_seconds + 2 * settings.codat_timeout_seconds + 30,
        result_ttl=300,
        failure_ttl=7 * 24 * 3600,
        name=JOB_NAME,
    )
