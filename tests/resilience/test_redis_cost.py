"""Issue 15: Redis commands per Codat event, counted over a real run (INFO
commandstats deltas, net of the idle background of sweeps and heartbeats):
gunicorn, an inbox worker, a delivery worker, the clock, a private Redis and a
subscriber with one `*` subscription; the soak's realistic mix of lifecycles
at a moderate steady rate, each event delivered once, no fault. Target: at
most 40 commands per event (docs/scaling.md, the capacity model)."""

from __future__ import annotations

import pytest

from perf.soak import SoakConfig, run_soak

pytestmark = [pytest.mark.resilience, pytest.mark.integration]

MAX_COMMANDS_PER_EVENT = 40

COST_RUN = SoakConfig(
    companies=250,  # about 1,500 events over 15 s: 100 a second
    duration=15.0,
    seed=20261206,
    max_copies=1,  # no duplicates: the cost of an event itself
    web_workers=2,
    rq_workers=0,
    inbox_workers=1,
    delivery_workers=1,
    concurrency=8,
    settle_timeout=60.0,
    idle_sample_seconds=3.0,
)


def test_commands_per_event_with_one_subscription(tmp_path):
    report = run_soak(COST_RUN.with_data_dir(tmp_path / "cost"))
    redis = report.figures["redis"]
    events, delivered = report.figures["events"], report.figures["deliveries"].get("delivered", 0)
    print(
        f"Redis commands per Codat event: {redis['per_event']} "
        f"({events} events, {delivered} deliveries, {delivered / events:.2f} per event; "
        f"Redis CPU {redis['cpu_ms_per_event']} ms per event); top: {redis['top_per_event']}"
    )
    assert report.ok, report.text()
    assert redis["per_event"] <= MAX_COMMANDS_PER_EVENT, redis
