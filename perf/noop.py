"""The worker benchmark's baseline job: one RQ job per event, doing nothing."""

from __future__ import annotations


def noop(x: object) -> None:
    """Receives the event body, as a one-job-per-webhook design would, and ignores it."""
