"""RQ's own per-job lines are debug lines; our one line per job stays at INFO
(codat_authflow/logs.py: QuietRQJobLines)."""

from __future__ import annotations

import logging

import pytest

from codat_authflow.logs import QuietRQJobLines


def _record(name: str, msg: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, ("w", "q", "id"), None)


@pytest.fixture
def root_level():
    root = logging.getLogger()
    before = root.level
    yield root.setLevel  # (setLevel also clears the loggers' isEnabledFor caches)
    root.setLevel(before)


def test_rq_per_job_lines_are_debug_lines(root_level):
    quiet = QuietRQJobLines()
    root_level(logging.INFO)
    per_job = [
        _record("rq.worker", "Worker %s: %s: %s (%s)"),
        _record("rq.worker", "Successfully completed %s job in %ss on worker %s"),
        _record("rq.worker", "Worker %s: job %s result is kept for %s seconds"),
        _record("rq.cron", "Enqueued job sweep to queue authflow"),
        _record("rq.worker", "Worker %s: cleaning registries for queue: %s"),
    ]
    kept = [
        _record("rq.worker", "Worker %s: started with PID %d, version %s"),
        _record("rq.worker", "Worker %s: %s: %s (%s)", logging.WARNING),
        _record("authflow.job", "job"),
    ]
    assert [quiet.filter(r) for r in per_job] == [False] * len(per_job)
    assert all(r.levelname == "DEBUG" for r in per_job)
    assert [quiet.filter(r) for r in kept] == [True] * len(kept)
    root_level(logging.DEBUG)
    assert quiet.filter(_record("rq.worker", "Worker %s: %s: %s (%s)"))
