"""`python -m workers`: an RQ worker for our queues (the Procfile's `worker:`).

A non-forking worker (workers/worker.py): the default forking worker pays a fork per job
(about 9 trivial jobs/s measured on these 2-core machines, against about 250
without the fork). Our jobs are short, pure Python and share no mutable state
between runs, so the isolation a fork buys is not worth that price; a job that
crashes the process is still handed back through the inbox's pending list.

Redis outages (codat_authflow/redis_wait.py): the process never exits for
one. It waits for Redis before the first run, and each time RQ's `work()`
ends because Redis went away it waits again and re-enters it (`serve`).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from contextlib import suppress

import structlog
from redis.exceptions import RedisError
from rq import Queue
from rq.exceptions import StopRequested

from codat_authflow.bootstrap import Services
from codat_authflow.jobs import enqueue_drain
from codat_authflow.logs import configure_logging
from codat_authflow.redis_wait import (
    RedisUnavailable,
    RedisWatch,
    backoff,
    quiet_rq_outage_lines,
    wait_for_redis,
)
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
    quiet_rq_outage_lines()
    ctx = current()
    names = queue_names(settings, sys.argv[1:])
    watch, stopping = RedisWatch("worker"), threading.Event()
    _stop_on_signals(stopping)
    worker = None
    while worker is None:  # RQ's Worker talks to Redis as it is built
        if not wait_for_redis(ctx.redis, watch, stopping):
            return 0
        try:
            worker = AuthflowWorker(
                [Queue(name, connection=ctx.redis) for name in names],
                connection=ctx.redis,
                maintenance_interval=settings.rq_maintenance_interval_seconds,
                worker_ttl=settings.rq_worker_ttl_seconds,
            )
        except RedisError as exc:
            watch.lost(exc)
    worker.stopping = stopping
    log.info("worker.starting", queues=names, name=worker.name)
    with suppress(StopRequested):  # RQ's signal handler, between two runs
        serve(worker, ctx, watch)
    return 0


def serve(worker: AuthflowWorker, ctx: Services, watch: RedisWatch) -> None:
    """Run `worker` until SIGTERM/SIGINT, whatever Redis does: wait for it
    (at start, and whenever a run of `work()` ends because it went away),
    then work again. RQ's `work()` ends on any error in its loop (a lost
    connection, a timeout, a blocking pop unblocked by a failover); only a
    stop request ends this loop. Runs that end quickly in a row (not an
    outage: a bug) are spaced out with the same capped backoff."""
    quick_runs = 0
    while not worker.stopping.is_set():
        _stop_on_signals(worker.stopping)  # RQ's own handlers are installed by work()
        if not wait_for_redis(ctx.redis, watch, worker.stopping):
            break
        started = time.monotonic()
        try:
            worker.forget_previous_run()
            # Whatever a previous run (or process) left in the inbox or outbox gets drained now.
            ctx.inbox.ensure_group()
            ctx.store.outbox.ensure_group()
            enqueue_drain(ctx.redis, ctx.settings.queue_name)
            worker.work(logging_level=ctx.settings.log_level, with_scheduler=True)
        except StopRequested:
            break
        except (RedisError, RedisUnavailable) as exc:
            if worker.stopping.is_set():
                break  # stopping anyway: RQ's teardown could not write the worker's death
            watch.lost(exc)
        if worker.stopping.is_set():
            break
        quick_runs = quick_runs + 1 if time.monotonic() - started < 10 else 0
        if quick_runs > 1 and not watch.down:
            log.warning("worker.restarting", runs_in_a_row=quick_runs)
            worker.stopping.wait(backoff(quick_runs))


def _stop_on_signals(stopping: threading.Event) -> None:
    def handler(signum, frame):
        stopping.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


if __name__ == "__main__":
    sys.exit(main())
