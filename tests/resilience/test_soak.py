"""The CI-sized soak: realistic, duplicated, shuffled Codat traffic through
gunicorn (4 workers), RQ workers, the clock and a private persistent Redis,
while workers are SIGKILLed, Redis restarts and the subscriber fails and
hangs. Every invariant of perf/soak/ must hold (the long run is the
same harness with bigger numbers: see docs/resilience.md)."""

from __future__ import annotations

import pytest

from perf.soak import SoakConfig, SubscriberFault, run_soak

pytestmark = [pytest.mark.resilience, pytest.mark.integration]

CI_SOAK = SoakConfig(
    companies=120,
    duration=12.0,
    seed=20261128,
    web_workers=4,
    rq_workers=0,  # dedicated pools, as docs/resilience.md recommends
    inbox_workers=2,
    delivery_workers=1,
    concurrency=12,
    kill_every=2.0,  # SIGKILL a worker (preferably a busy one) every ~2 s ...
    kill_from=1.0,
    kill_until=7.0,  # ... early enough for RQ to hand the last job back (job timeout + 5 s)
    redis_restarts=(5.0,),
    subscriber_faults=(SubscriberFault("fail", 2.0, 3.0), SubscriberFault("hang", 8.0, 3.0)),
    settle_timeout=150.0,
    idle_sample_seconds=3.0,
)


def test_soak_with_faults_keeps_every_invariant(tmp_path):
    report = run_soak(CI_SOAK.with_data_dir(tmp_path / "soak"))
    print(report.text())
    assert report.ok, report.text()
    figures = report.figures
    # The faults did happen, or the test proves nothing.
    assert figures["worker_kills"]["kills"] >= 3
    assert figures["redis_restarts"], figures
    assert figures["receiver_answers"].get("200"), "no duplicate was delivered"
    assert figures["deliveries"].get("delivered")
