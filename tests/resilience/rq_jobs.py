"""Jobs for tests/resilience/test_rq_handback.py, importable by a real
`python -m workers` process (which runs from the repository root)."""

from __future__ import annotations

import time

from rq import get_current_job


def sleep_once(marker: str, seconds: float) -> str:
    """Sleep the first time (long enough to be SIGKILLed), return at once the next."""
    job = get_current_job()
    assert job is not None
    if job.connection.set(marker, "1", nx=True, ex=600):
        time.sleep(seconds)
        return "slept"
    return "ran again"
