"""`python -m workers`: an RQ worker for our queue (the Procfile's `worker:`).

A non-forking `SimpleWorker`: the default forking worker pays a fork per job
(about 9 trivial jobs/s measured on these 2-core machines, against about 250
without the fork). Our jobs are short, pure Python and share no mutable state
between runs, so the isolation a fork buys is not worth that price; a job that
crashes the process is still handed back through the inbox's pending list.
"""

from __future__ import annotations

import sys

import structlog
from rq import Queue
from rq.worker import SimpleWorker

from runtime.logs import configure_logging
from runtime.settings import ConfigError, Settings
from workers.context import current
from workers.scheduling import enqueue_drain

log = structlog.get_logger(__name__)


def main() -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, development=settings.development)
    ctx = current()
    ctx.inbox.ensure_group()
    # Whatever a previous run left in the inbox gets drained now.
    enqueue_drain(ctx.redis, settings.queue_name)
    worker = SimpleWorker([Queue(settings.queue_name, connection=ctx.redis)], connection=ctx.redis)
    log.info("worker.starting", queue=settings.queue_name, name=worker.name)
    worker.work(logging_level=settings.log_level, with_scheduler=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
