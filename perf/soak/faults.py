"""The faults a soak injects, and how their consequences are followed."""

from __future__ import annotations

import contextlib
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from redis.exceptions import RedisError
from rq import Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from perf.soak.config import CRON_FUNCTIONS
from perf.soak.stack import Stack


@dataclass
class AbandonedJob:
    job_id: str
    queue: str
    function: str
    killed_at: float  # monotonic
    retries_left: int | None
    outcome: str = "pending"  # pending | handed_back | failed | vanished
    seen: list[str] = field(default_factory=list)
    resolved_after: float | None = None  # seconds from the kill to the hand-back


class FaultInjection:
    """Part of `SoakRun` (perf/soak/run.py): SIGKILL a worker (and follow the
    job it held until RQ hands it back), restart or crash Redis (and cut its
    AOF's tail, as a host crash would)."""

    def _kill_one(self, stack: Stack, rng: random.Random) -> None:
        """SIGKILL a worker, preferably one running a job, and start a new one."""
        candidates = [p for p in stack.workers if p.is_running()]
        if not candidates:
            return
        current: dict[int, str | None] = {}
        with contextlib.suppress(RedisError):
            for worker in Worker.all(connection=self.conn):
                current[worker.pid] = worker.get_current_job_id()
        busy = [p for p in candidates if current.get(p.pid)]
        victim = rng.choice(busy or candidates)
        job_id = current.get(victim.pid)
        killed_at = time.monotonic()
        stack.kill_worker(victim)
        self.kills += 1
        if not job_id:
            self.kills_idle += 1
            return
        with contextlib.suppress(RedisError, NoSuchJobError):
            job = Job.fetch(job_id, connection=self.conn)
            if job.get_status(refresh=False) == JobStatus.STARTED:
                self.abandoned.append(
                    AbandonedJob(job_id, job.origin, job.func_name, killed_at, job.retries_left)
                )
                return
        self.kills_idle += 1  # the job finished between our look and the kill

    def _restart_redis(self, now: float) -> None:
        crash = self.config.redis_crash
        mode = (
            f"crash (SIGKILL, last {self.config.lose_seconds}s of AOF lost)"
            if crash
            else "graceful restart"
        )
        self.say(f"Redis {mode}")
        self._stats_mark()
        self.redis_down = True
        began = time.monotonic()
        if crash:
            killed_at = time.time()
            self.server.kill()
            if self.config.lose_seconds > 0:
                self.aof_bytes_lost += self._lose_aof_tail(began - self.config.lose_seconds)
            # Every webhook acknowledged by now was accepted before the crash;
            # _account_for_crash checks which of them survived.
            self.crashes.append((killed_at, time.monotonic()))
            self.server.start()
        else:
            self.server.restart()
        self.redis_down = False
        downtime = time.monotonic() - began
        self.redis_downtime.append((round(now, 1), round(downtime, 2)))
        self._stats_mark(reset=True)
        self.say(f"Redis back after {downtime:.2f}s")

    def _incr_aof(self) -> Path | None:
        """The AOF file Redis appends to now (Redis 7's multi-part AOF)."""
        directory = self.data_dir / "redis" / "appendonlydir"
        try:
            manifest = next(directory.glob("*.manifest")).read_text()
        except (StopIteration, OSError):
            return None
        names = [line.split()[1] for line in manifest.splitlines() if line.endswith("type i")]
        return directory / names[-1] if names else None

    def _sample_aof(self) -> None:
        path = self._incr_aof()
        with contextlib.suppress(OSError, AttributeError):
            self.aof_samples.append((time.monotonic(), path.name, path.stat().st_size))
            self.aof_samples = self.aof_samples[-200:]

    def _lose_aof_tail(self, since: float) -> int:
        """Simulate a host crash: Redis wrote (but did not fsync) its last
        second of commands; cut the AOF back to its size at `since`. (A
        SIGKILL of redis-server alone loses nothing: every write(2) is in the
        page cache before the client gets its reply.)"""
        path = self._incr_aof()
        if path is None or not path.exists():
            return 0
        size = path.stat().st_size
        older = [n for t, name, n in self.aof_samples if name == path.name and t <= since]
        keep = older[-1] if older else 0
        if keep < size:
            with path.open("r+b") as fh:
                fh.truncate(keep)
        return size - keep

    def _watch_abandoned(self) -> None:
        for job in self.abandoned:
            if job.outcome != "pending":
                continue
            try:
                fetched = Job.fetch(job.job_id, connection=self.conn)
                status = fetched.get_status(refresh=False)
                retries_left = fetched.retries_left
            except NoSuchJobError:
                job.outcome = "handed_back" if job.seen else "vanished"
                job.resolved_after = time.monotonic() - job.killed_at
                continue
            except RedisError:
                return
            if not job.seen or job.seen[-1] != str(status):
                job.seen.append(str(status))
            if status == JobStatus.FAILED and job.function in CRON_FUNCTIONS:
                job.outcome = "cron_failed"  # no Retry for cron jobs; see verify()
            elif status == JobStatus.FAILED:
                job.outcome = "failed"
            elif status in (JobStatus.SCHEDULED, JobStatus.QUEUED, JobStatus.FINISHED) or (
                status == JobStatus.STARTED
                and job.retries_left is not None
                and retries_left is not None
                and retries_left < job.retries_left
            ):
                job.outcome = "handed_back"
            else:
                continue
            job.resolved_after = time.monotonic() - job.killed_at
