"""Issue 12, defect 2, with the pump of issue 15: an attempt that never
finishes (its pump's worker killed) counts as a failed attempt once its lease
ends, and the clock's sweep queues a pump for deliveries that come due while
none runs."""

from __future__ import annotations

import time

import fakeredis
import pytest
from rq import Queue

from codat_authflow.bootstrap import Services
from codat_authflow.delivery import attempts
from codat_authflow.delivery.attempts import (
    INTERRUPTED,
    LEASE_SECONDS,
    attempt_delivery,
    sweep_deliveries,
)
from codat_authflow.delivery.sender import make_client
from codat_authflow.settings import Settings
from tests.support.subscriber import Subscriber
from tests.unit.test_delivery import ENV, queued_delivery_ids, run_lifecycle, subscribe


@pytest.fixture
def ctx():
    context = Services.build(Settings.from_env(ENV), fakeredis.FakeRedis())
    context.inbox.ensure_group()
    return context


@pytest.fixture
def client():
    with make_client() as http:
        yield http


@pytest.fixture
def subscriber():
    with Subscriber() as sub:
        yield sub


class Killed(BaseException):
    """Stands for the death of the pump's worker, mid-exchange."""


def kill_the_next_attempt(monkeypatch):
    def killed(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(attempts, "send", killed)


def pump_jobs(ctx):
    return Queue(ctx.settings.delivery_queue_name, connection=ctx.redis).jobs


def test_an_attempt_killed_midway_counts_when_its_lease_ends(ctx, client, subscriber, monkeypatch):
    subscribe(ctx, subscriber, ["company.ready"])
    run_lifecycle(ctx)
    [delivery_id] = queued_delivery_ids(ctx)
    kill_the_next_attempt(monkeypatch)
    with pytest.raises(Killed):
        attempt_delivery(ctx, delivery_id, client=client)
    monkeypatch.undo()

    # Leased: no pump takes it until the lease ends.
    assert queued_delivery_ids(ctx) == []
    assert ctx.deliveries.claim(time.time(), LEASE_SECONDS, 10) == []
    later = time.time() + LEASE_SECONDS + 1
    [(claimed, previous)] = ctx.deliveries.claim(later, LEASE_SECONDS, 10)
    assert claimed == delivery_id and previous is not None  # its attempt never finished
    ctx.redis.hset(ctx.deliveries.started, delivery_id, previous)  # as if not claimed yet

    assert attempt_delivery(ctx, delivery_id, client=client) == "pending"
    delivery = ctx.deliveries.get(delivery_id)
    [attempt] = delivery.attempts
    assert attempt.error == INTERRUPTED and attempt.status_code is None
    assert delivery.attempt_started_at is None and delivery.next_attempt_at is not None
    assert ctx.redis.zscore(ctx.deliveries.pending, delivery_id) == delivery.next_attempt_at
    assert ctx.redis.hget(ctx.deliveries.started, delivery_id) is None
    assert subscriber.received == []
    assert attempt_delivery(ctx, delivery_id, client=client) == "delivered"
    assert ctx.redis.zcard(ctx.deliveries.pending) == 0


def test_the_sweep_queues_a_pump_for_due_deliveries_when_none_is_scheduled(ctx, subscriber):
    subscribe(ctx, subscriber, ["company.ready"])
    run_lifecycle(ctx)
    [_delivery_id] = queued_delivery_ids(ctx)
    Queue(ctx.settings.delivery_queue_name, connection=ctx.redis).empty()  # the pump is lost
    assert not sweep_deliveries(ctx)  # its flag is still held
    ctx.redis.delete(ctx.store.keys.pump_scheduled)  # ... until it expires
    assert sweep_deliveries(ctx)
    assert [j.func_name for j in pump_jobs(ctx)] == ["workers.notify.pump"]
    assert not sweep_deliveries(ctx)  # queued: not twice


def test_the_sweep_queues_nothing_before_a_retry_is_due(ctx, client, subscriber):
    subscribe(ctx, subscriber, ["company.ready"])
    run_lifecycle(ctx)
    [delivery_id] = queued_delivery_ids(ctx)
    subscriber.set(fail_next=1)
    assert attempt_delivery(ctx, delivery_id, client=client) == "pending"
    Queue(ctx.settings.delivery_queue_name, connection=ctx.redis).empty()
    ctx.redis.delete(ctx.store.keys.pump_scheduled)
    assert not sweep_deliveries(ctx)  # due in 5 s
    assert sweep_deliveries(ctx, now=time.time() + 6)
