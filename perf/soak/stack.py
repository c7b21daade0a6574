"""The application's processes under the soak: gunicorn, RQ worker pools and the
clock, started through tests/support/processes.py, supervised (whatever dies
on its own is reported and restarted) and killed on purpose."""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import (
    Process,
    start_gunicorn,
    start_process,
)


@dataclass
class ProcessExit:
    name: str
    pid: int
    returncode: int | None
    at: float  # seconds after posting started
    near_redis_restart: bool  # within 10 s of one
    last_lines: str


class Stack:
    """The application's processes, managed from one thread (the one that
    constructs it): PR_SET_PDEATHSIG ties every child to the thread that
    started it, so starting them elsewhere would kill them with that thread."""

    def __init__(self, env: dict[str, str], log_dir: Path, web_workers: int, pools: dict[str, int]):
        self.env = env
        self.log_dir = log_dir
        self.web_workers = web_workers
        self.serial = 0
        self.workers: list[Process] = []
        self.roles: dict[int, str] = {}  # pid -> the --queues the worker was started with
        self.web = start_gunicorn(env, workers=web_workers, log_dir=log_dir, name="gunicorn-0")
        self.port = int((self.web.url or "").rsplit(":", 1)[1])
        for role, count in pools.items():
            for _ in range(count):
                self.start_worker(role)
        self.clock = self._start_clock()
        self.expected_dead: set[int] = set()
        self.exits: list[ProcessExit] = []
        self.restarts = 0

    @property
    def base_url(self) -> str:
        return self.web.url or ""

    def _name(self, role: str) -> str:
        self.serial += 1
        return f"{role}-{self.serial}"

    def start_worker(self, role: str = "inbox,deliveries") -> Process:
        """`python -m workers --queues ROLE`; the default is the Procfile's (both)."""
        argv = [sys.executable, "-m", "workers"]
        if role != "inbox,deliveries":
            argv += ["--queues", role]
        process = start_process(argv, self.env, name=self._name("worker"), log_dir=self.log_dir)
        self.workers.append(process)
        self.roles[process.pid] = role
        return process

    def _start_clock(self) -> Process:
        return start_process(
            [sys.executable, "-m", "workers.clock"],
            self.env,
            name=self._name("clock"),
            log_dir=self.log_dir,
        )

    def kill_worker(self, process: Process) -> None:
        """SIGKILL (the worker and its scheduler child) and start a replacement."""
        self.expected_dead.add(process.pid)
        process.kill()
        self.workers.remove(process)
        self.start_worker(self.roles[process.pid])

    def supervise(self, now: float, redis_down: bool) -> list[ProcessExit]:
        """`redis_down`: Redis is, or was within the last 10 s, restarting."""
        """Restart whatever died on its own; report each such exit."""
        found = []
        for process in list(self.workers):
            if not process.is_running() and process.pid not in self.expected_dead:
                found.append(self._exit(process, now, redis_down))
                self.workers.remove(process)
                self.start_worker(self.roles[process.pid])
        if not self.clock.is_running():
            found.append(self._exit(self.clock, now, redis_down))
            self.clock = self._start_clock()
        if not self.web.is_running():
            found.append(self._exit(self.web, now, redis_down))
            self.web = start_gunicorn(
                self.env,
                workers=self.web_workers,
                port=self.port,
                log_dir=self.log_dir,
                name=self._name("gunicorn"),
            )
        self.exits.extend(found)
        self.restarts += len(found)
        return found

    @staticmethod
    def _exit(process: Process, now: float, redis_down: bool) -> ProcessExit:
        """Why it exited, from its last log lines: RQ's own last words and the
        exception, without the traceback's frames."""
        reasons = []
        for line in (process.stdout_tail(400) + "\n" + process.stderr_tail(40)).splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                if line[:1].isalpha() and ("Error" in line or "Exception" in line):
                    reasons.append(line.strip())
                continue
            if isinstance(entry, dict) and entry.get("level") in ("error", "critical"):
                exception = (entry.get("exception") or "").strip().splitlines()
                reasons.append(
                    str(entry.get("event"))[:160] + (f" <- {exception[-1]}" if exception else "")
                )
        return ProcessExit(
            process.name,
            process.pid,
            process.returncode,
            round(now, 1),
            redis_down,
            " | ".join(reasons[-2:])[-600:],
        )

    def stop(self) -> None:
        for process in [self.clock, *self.workers, self.web]:
            with contextlib.suppress(Exception):
                process.stop(10)
