"""Helpers shared by the benchmarks: process CPU time, app environment, formatting."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from tests.support import processes
from tests.support.processes import REPO_ROOT

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def app_env(redis_url: str, log_level: str) -> dict[str, str]:
    """The environment tests/conftest.py's ``stack_env`` gives the app's processes."""
    return processes.app_env(redis_url, LOG_LEVEL=log_level)


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()  # fields from "state" on; comm may hold spaces


def _descendants(roots: Iterable[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat_fields(int(entry))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = set(), list(roots)
    while todo:  # bounded: every pid is visited once
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return found


def cpu_seconds(roots: Iterable[int]) -> float:
    """User+system CPU seconds used so far by ``roots`` and all their live
    descendants (Linux /proc; 0.0 elsewhere). Take a difference around a run."""
    if not os.path.isdir("/proc"):
        return 0.0
    total = 0
    for pid in _descendants(roots):
        fields = _stat_fields(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores, every
    process), from /proc/stat; 0.0 where unavailable. The difference around a
    run, minus what the benchmark's own processes used, is the load other
    processes put on the machine meanwhile: the noise in the measurement."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
    except OSError:
        return 0.0
    # cpu user nice system idle iowait irq softirq steal ...
    busy = sum(int(value) for value in fields[1:4]) + sum(int(v) for v in fields[6:9])
    return busy / _CLOCK_TICKS


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def code_version(repo: Path = REPO_ROOT) -> str:
    """``git describe``-like: the commit measured, and whether files differ from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    return f"{head}" + (f" + {len(dirty)} changed or untracked path(s)" if dirty else "")


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def format_counts(counts: Mapping) -> str:
    return ", ".join(f"{key}: {value}" for key, value in sorted(counts.items(), key=str)) or "-"


def run_main(main) -> None:
    """Exit with `main()`'s code; a process or server that would not start,
    or a timeout (RuntimeError), is a loud failure, never a reported rate."""
    try:
        code = main()
    except RuntimeError as exc:
        print(f"\n!!! FAILED: {exc}")
        code = 1
    sys.exit(code)
