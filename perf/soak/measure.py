"""Measuring Redis: commands per event from INFO commandstats deltas (summed
across restarts), the harness's own commands, Redis's CPU time."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from typing import Any

import redis as redis_lib
from redis.exceptions import RedisError

from codat_authflow.storage.deliveries import Delivery
from perf.soak.config import PREFIX


class CountingRedis(redis_lib.Redis):
    """The harness's own connection. It counts the commands it sends, so
    that they can be taken out of the server's INFO commandstats."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.counts: Counter[str] = Counter()

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.counts[str(args[0]).lower()] += 1
        return super().execute_command(*args, **options)


CPU_MS = "_cpu_ms"  # not a command: Redis's own CPU time, kept alongside the counts


def commandstats(conn: redis_lib.Redis) -> Counter[str]:
    """Calls per command since Redis started, plus its CPU time in ms (CPU_MS)."""
    stats = conn.info("commandstats")
    counts = Counter(
        {name.removeprefix("cmdstat_"): int(values["calls"]) for name, values in stats.items()}
    )
    cpu = conn.info("cpu")
    counts[CPU_MS] = int((float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])) * 1000)
    return counts


def deliveries_of(conn: redis_lib.Redis) -> list[Delivery]:
    """Every delivery record in Redis."""
    keys = list(conn.scan_iter(f"{PREFIX}:delivery:*", count=1000))
    found = []
    for begin in range(0, len(keys), 500):
        for raw in conn.mget(keys[begin : begin + 500]):
            if raw is not None:
                found.append(Delivery.from_json(raw))
    return found


class CommandAccounting:
    """Part of `SoakRun` (perf/soak/run.py): INFO commandstats segments across
    Redis restarts."""

    def _stats_mark(self, *, reset: bool = False) -> None:
        """Close the current commandstats segment (INFO counters restart with
        Redis, so a run is the sum of its segments)."""
        try:
            stats = commandstats(self.conn)
        except RedisError:
            stats = None
        if reset or not hasattr(self, "_segment_start"):
            self._segment_start = stats or Counter()
            return
        if stats is not None:
            self.stats_segments.append(stats - self._segment_start)
            self._segment_start = stats


def redis_cpu_seconds(conn: redis_lib.Redis) -> tuple[float, float]:
    """Redis's CPU time (user + sys) since it started: the whole process, and
    its main thread alone (the one that runs commands: what one core bounds;
    the rest is background I/O threads, the AOF's fsync among them)."""
    cpu = conn.info("cpu")
    process = float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])
    main = float(cpu.get("used_cpu_sys_main_thread", 0.0)) + float(
        cpu.get("used_cpu_user_main_thread", 0.0)
    )
    return process, main


def load_while_posting(
    samples: Sequence[tuple[float, float, float]], posting_end: float, events: int, posts: int
) -> dict[str, Any]:
    """The rate the stack took while posting and Redis's CPU share meanwhile,
    from INFO cpu sampled about once a second: ``samples`` are (seconds since
    posting began, process CPU s, main-thread CPU s). A counter going down is
    a Redis restart: the new value counts from zero."""
    window = [s for s in samples if s[0] <= posting_end]
    if len(window) < 2 or posting_end <= 0:
        return {}

    def busy(a: tuple[float, float, float], b: tuple[float, float, float], i: int) -> float:
        return b[i] - a[i] if b[i] >= a[i] else b[i]

    elapsed = window[-1][0] - window[0][0]
    pairs = list(itertools.pairwise(window))
    process = sum(busy(a, b, 1) for a, b in pairs)
    main = sum(busy(a, b, 2) for a, b in pairs)
    # The busiest 10 s of the main thread.
    peak = 0.0
    for start in range(len(window)):
        end = start
        while end + 1 < len(window) and window[end + 1][0] - window[start][0] <= 10.0:
            end += 1
        span = window[end][0] - window[start][0]
        if span >= 5.0:
            used = sum(busy(a, b, 2) for a, b in pairs[start:end])
            peak = max(peak, used / span)
    return {
        "posting_seconds": round(posting_end, 1),
        "events_per_s": round(events / posting_end, 1),
        "posts_per_s": round(posts / posting_end, 1),
        "redis_cpu_percent": round(100 * process / elapsed, 1),
        "redis_main_thread_cpu_percent": round(100 * main / elapsed, 1),
        "redis_main_thread_cpu_percent_peak_10s": round(100 * peak, 1),
    }
