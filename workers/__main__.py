"""`python -m workers`: an RQ worker for our queues (the Procfile's `worker:`).

A non-forking worker (workers/worker.py): the default forking worker pays a fork per job
(about 9 trivial jobs/s measured on these 2-core machines, against about 250
without the fork). Our jobs are short, pure Python and share no mutable state
between runs, so the isolation a fork buys is not worth that price; a job that
crashes the process is still handed back through the inbox's pending list.
"""

from __future__ import annotations

import argparse
import sys

import structlog
from rq import Queue

from codat_authflow.jobs import enqueue_drain
from codat_authflow.logs import configure_logging
from codat_authflow.settings import Settings, settings_or_exit
from workers.context import current
from workers.worker import AuthflowWorker

log = structlog.get_logger(__name__)


def queue_names(settings: Settings, argv: list[str]) -> list[str]:
    """Both queues by default, webhooks first. `--queues deliveries` (or
    `inbox`) runs a pool dedicated to one, so slow subscribers never delay
    the processing of Codat's webhooks."""
    parser = argparse.ArgumentParser(prog="python -m workers")
    parser.add_argument("--queues", default="inbox,deliveries")
    chosen = parser.parse_args(argv).queues.split(",")
    by_role = {"inbox": settings.queue_name, "deliveries": settings.delivery_queue_name}
    unknown = [role for role in chosen if role not in by_role]
    if unknown:
        parser.error(f"unknown queue role(s) {unknown}; use inbox and/or deliveries")
    return [by_role[role] for role in chosen]


def main() -> int:
    settings = settings_or_exit("worker")  # problems: one line each, exit 2
    configure_logging(settings.log_level, development=settings.development)
    ctx = current()
    ctx.inbox.ensure_group()
    ctx.store.outbox.ensure_group()
    # Whatever a previous run left in the inbox or outbox gets drained now.
    enqueue_drain(ctx.redis, settings.queue_name)
    names = queue_names(settings, sys.argv[1:])
    queues = [Queue(name, connection=ctx.redis) for name in names]
    worker = AuthflowWorker(
        queues,
        connection=ctx.redis,
        maintenance_interval=settings.rq_maintenance_interval_seconds,
    )
    log.info("worker.starting", queues=names, name=worker.name)
    worker.work(logging_level=settings.log_level, with_scheduler=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
