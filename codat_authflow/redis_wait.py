"""Riding out Redis outages: what every long-running process (RQ workers,
delivery workers, the clock) does when Redis cannot be reached, at start or
later. It waits, with capped exponential backoff and jitter, and carries on
when Redis answers again; it never exits for it.

One log line when Redis goes away (`redis.unavailable`) and one when it is
back (`redis.available`, with how long it was away): no line per retry.
The web tier needs none of this: each request uses the pool, which
reconnects by itself, and answers 503 meanwhile.
"""

from __future__ import annotations

import logging
import random
import threading
import time

import structlog
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = structlog.get_logger("authflow.redis")

FIRST_DELAY_SECONDS = 0.25
MAX_DELAY_SECONDS = 5.0  # once Redis is back, a process notices within this


class RedisUnavailable(Exception):
    """Redis could not be reached. Raised by our RQ worker's heartbeat instead
    of redis-py's ConnectionError, so that RQ's own retry loop (one error line
    per retry, up to 60 s between tries) does not swallow it: `work()` ends,
    and the worker's entrypoint waits for Redis and enters it again."""


class RedisWatch:
    """The state of Redis as one process sees it; logs the changes only."""

    def __init__(self, process: str):
        self.process = process
        self.down_since: float | None = None

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def lost(self, error: BaseException | str) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            log.warning("redis.unavailable", process=self.process, error=_describe(error))

    def back(self) -> None:
        if self.down_since is not None:
            away = round(time.monotonic() - self.down_since, 1)
            self.down_since = None
            log.info("redis.available", process=self.process, down_seconds=away)


def backoff(attempt: int) -> float:
    """Seconds before retry number `attempt` (0, 1, ...): exponential, capped
    at MAX_DELAY_SECONDS, with full jitter in its upper half so that a fleet
    of processes does not reconnect in step."""
    ceiling = min(MAX_DELAY_SECONDS, FIRST_DELAY_SECONDS * 2**attempt)
    return random.uniform(ceiling / 2, ceiling)


def wait_for_redis(redis: Redis, watch: RedisWatch, stop: threading.Event | None = None) -> bool:
    """Block until Redis answers a PING (True), or until `stop` is set (False)."""
    stop = stop if stop is not None else threading.Event()
    attempt = 0
    while not stop.is_set():
        try:
            redis.ping()
        except RedisError as exc:  # refused, timed out, loading, no master known, ...
            watch.lost(exc)
            stop.wait(backoff(attempt))
            attempt += 1
            continue
        watch.back()
        return True
    return False


def is_outage(error: BaseException) -> bool:
    return isinstance(error, RedisConnectionError | RedisTimeoutError | RedisUnavailable)


class _QuietOutages(logging.Filter):
    """Drops RQ's own lines about an outage (a line per retry, a traceback
    per loop that gave up); `RedisWatch` says it once instead."""

    MARKERS = ("could not connect to Redis", "Redis connection timeout")

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and is_outage(error):
            return False
        message = record.getMessage()
        if any(marker in message for marker in self.MARKERS):
            return False
        return not ("raised an exception" in message and "redis.exceptions." in message)


def quiet_rq_outage_lines() -> None:
    """Install the filter on RQ's loggers (worker, its scheduler process, cron)."""
    for name in ("rq.worker", "rq.scheduler", "rq.cron"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _QuietOutages) for f in logger.filters):
            logger.addFilter(_QuietOutages())


def _describe(error: BaseException | str) -> str:
    if isinstance(error, str):
        return error
    cause = error.__cause__ if error.__cause__ is not None else error
    return f"{type(cause).__name__}: {cause}"[:300]
