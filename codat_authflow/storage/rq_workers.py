"""RQ's worker registry without ghosts.

RQ lists workers in the sets `rq:workers` and `rq:workers:<queue>`; each
worker's own key expires when its heartbeats stop (RQ_WORKER_TTL_SECONDS
after the last one, `workers/worker.py`), but nothing removes a dead worker
from the sets until some worker's maintenance happens to clean its queue's
set, and `Worker.count` counts set members. `prune_dead_workers` removes the
members whose key has expired; the clock's sweep, `/ops/rq` and the
`authflow_rq_workers` metric call it before they look, so a worker that died
without unregistering (SIGKILL, a lost host, Redis going away under it)
stops being shown as soon as its key expires.
"""

from __future__ import annotations

from collections.abc import Iterable

from redis import Redis
from rq import Queue
from rq.utils import missing_keys
from rq.worker_registration import REDIS_WORKER_KEYS, clean_worker_registry, get_keys


def prune_dead_workers(redis: Redis, queue_names: Iterable[str]) -> int:
    """Drop dead workers from RQ's registry sets; returns the live count."""
    for name in queue_names:
        clean_worker_registry(Queue(name, connection=redis))
    registered = sorted(get_keys(connection=redis))
    dead = missing_keys(redis, registered)
    if dead:
        redis.srem(REDIS_WORKER_KEYS, *dead)
    return len(registered) - len(dead)
