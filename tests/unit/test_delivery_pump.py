"""The delivery pump (issue 15): batched, concurrent sends from the schedule,
per-subscription limits and the circuit breaker. In-process, fakeredis and
real local HTTP subscribers."""

from __future__ import annotations

import itertools
import time

import fakeredis
import pytest

from codat_authflow.bootstrap import Services
from codat_authflow.delivery.pump import run_pump
from codat_authflow.delivery.sender import make_client
from codat_authflow.observability.metrics import DELIVERIES
from codat_authflow.settings import Settings
from tests.support.subscriber import Subscriber
from tests.unit.test_delivery import ENV, run_lifecycle, subscribe


def make_ctx(**env):
    context = Services.build(
        Settings.from_env({**ENV, "DELIVERY_PUMP_IDLE_MS": "100", **env}), fakeredis.FakeRedis()
    )
    context.inbox.ensure_group()
    return context


@pytest.fixture
def client():
    with make_client() as http:
        yield http


def test_one_pump_sends_every_due_delivery_and_leaves_nothing_behind(client):
    ctx = make_ctx()
    with Subscriber() as subscriber:
        subscription = subscribe(ctx, subscriber)
        for _ in range(3):
            run_lifecycle(ctx)
        stats = run_pump(ctx, client)
        assert stats["delivered"] == 15 and stats["sent"] == 15
        assert len(subscriber.received) == 15 and subscriber.state.rejected == 0
    listed = ctx.deliveries.for_subscription(subscription.id)
    assert {d.status for d in listed} == {"delivered"}
    assert all(len(d.attempts) == 1 for d in listed)
    assert ctx.redis.zcard(ctx.deliveries.pending) == 0
    assert ctx.redis.hlen(ctx.deliveries.started) == 0
    assert not ctx.redis.exists(ctx.store.keys.pump_scheduled)  # released when idle
    counters = DELIVERIES.key(ctx.settings.key_prefix)
    assert ctx.redis.hget(counters, DELIVERIES.field(("delivered",))) == b"15"


def test_a_hanging_subscriber_holds_only_its_own_slots(client):
    ctx = make_ctx(DELIVERY_MAX_IN_FLIGHT_PER_SUBSCRIPTION="1", DELIVERY_CONCURRENCY="4")
    with Subscriber() as healthy, Subscriber() as hung:
        subscribe(ctx, healthy)
        hung_subscription = subscribe(ctx, hung)
        hung.set(mode="hang", hang_seconds=2.0)
        for _ in range(2):
            run_lifecycle(ctx)
        started = time.time()
        stats = run_pump(ctx, client)
        # The healthy subscriber got all 10 while the hanging one held one slot at a time.
        assert len(healthy.received) == 10
        assert max(r.at for r in healthy.received) - started < 1.5
        assert stats["sent"] >= 10
    listed = ctx.deliveries.for_subscription(hung_subscription.id)
    attempts = sum(len(d.attempts) for d in listed)
    assert attempts == hung.state.requests  # deferrals are not attempts


def test_the_breaker_opens_after_consecutive_failures_and_probes_after_the_cool_down(client):
    ctx = make_ctx(
        DELIVERY_BREAKER_FAILURES="2",
        DELIVERY_BREAKER_COOLDOWN_SECONDS="1",
        DELIVERY_MAX_IN_FLIGHT_PER_SUBSCRIPTION="1",
        DELIVERY_RETRY_SCHEDULE="0,60",
        DELIVERY_PUMP_IDLE_MS="1500",
    )
    with Subscriber() as subscriber:
        subscription = subscribe(ctx, subscriber)
        subscriber.set(mode="fail")
        run_lifecycle(ctx)  # five deliveries
        run_pump(ctx, client)
        view = ctx.subscriptions.get(subscription.id)
        assert view.breaker_failures >= 2 and view.breaker_open_until is not None
        listed = ctx.deliveries.for_subscription(subscription.id)
        # Two failures opened it; from then on one probe per 1 s cool-down,
        # each failing and reopening it. Every attempt is recorded, none dropped.
        times = sorted(a.at for d in listed for a in d.attempts)
        assert len(times) == subscriber.state.requests
        gaps = [b - a for a, b in itertools.pairwise(times[1:])]  # after the 2nd failure
        assert gaps and min(gaps) >= 0.9, times
        assert all(d.status == "pending" for d in listed)
        assert ctx.redis.zcard(ctx.deliveries.pending) == 5

        subscriber.set(mode="ok")
        time.sleep(max(0.0, view.breaker_open_until - time.time()) + 0.05)
        ctx.redis.zadd(ctx.deliveries.pending, {d.id: time.time() for d in listed}, xx=True)
        run_pump(ctx, client)
        assert len(subscriber.received) == 5
        closed = ctx.subscriptions.get(subscription.id)
        assert closed.breaker_state(time.time()) == "closed" and closed.failing_since is None
