"""Measuring Redis: commands per event from INFO commandstats deltas (summed
across restarts), the harness's own commands, Redis's CPU time."""

from __future__ import annotations

from collections import Counter
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
