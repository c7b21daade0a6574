"""Issue 12, defect 2: an attempt that never finishes (its worker killed, or
RQ's job timeout) counts as a failed attempt, and the clock's sweep
reschedules pending deliveries whose job was lost."""

from __future__ import annotations

import time

import fakeredis
import pytest
from rq import Queue
from rq.registry import ScheduledJobRegistry

from codat_authflow.bootstrap import Services
from codat_authflow.delivery import attempts
from codat_authflow.delivery.attempts import (
    INTERRUPTED,
    LOST_AFTER_SECONDS,
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
    """Stands for RQ's JobTimeoutException, or the horse's death, mid-exchange."""


def kill_the_next_attempt(monkeypatch):
    def killed(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(attempts, "send", killed)


def test_a_job_killed_mid_attempt_counts_it_when_handed_back(ctx, client, subscriber, monkeypatch):
    subscribe(ctx, subscriber, ["company.ready"])
    run_lifecycle(ctx)
    [delivery_id] = queued_delivery_ids(ctx)
    kill_the_next_attempt(monkeypatch)
    with pytest.raises(Killed):
        attempt_delivery(ctx, delivery_id, client=client)
    monkeypatch.undo()

    # RQ hands the job back: it records the killed attempt and schedules the retry.
    assert attempt_delivery(ctx, delivery_id, client=client) == "pending"
    delivery = ctx.deliveries.get(delivery_id)
    [attempt] = delivery.attempts
    assert attempt.error == INTERRUPTED and attempt.status_code is None
    assert delivery.attempt_started_at is None and delivery.next_attempt_at is not None
    scheduled = ScheduledJobRegistry(ctx.settings.delivery_queue_name, connection=ctx.redis)
    assert len(scheduled.get_job_ids()) == 1
    assert subscriber.received == []
    assert attempt_delivery(ctx, delivery_id, client=client) == "delivered"


def test_the_sweep_reschedules_a_delivery_whose_job_was_lost(ctx, client, subscriber):
    subscribe(ctx, subscriber, ["company.ready"])
    run_lifecycle(ctx)
    [delivery_id] = queued_delivery_ids(ctx)
    Queue(ctx.settings.delivery_queue_name, connection=ctx.redis).empty()  # the job is lost
    assert sweep_deliveries(ctx) == []  # not overdue yet
    later = time.time() + LOST_AFTER_SECONDS + 1
    assert sweep_deliveries(ctx, now=later) == [delivery_id]
    assert queued_delivery_ids(ctx) == [delivery_id]
    assert sweep_deliveries(ctx, now=later) == []  # queued again: not twice
    assert attempt_delivery(ctx, delivery_id, client=client) == "delivered"
    assert sweep_deliveries(ctx, now=later + 3600) == []


def test_the_sweep_counts_an_attempt_whose_job_died_for_good(ctx, client, subscriber, monkeypatch):
    subscribe(ctx, subscriber, ["company.ready"])
    run_lifecycle(ctx)
    [delivery_id] = queued_delivery_ids(ctx)
    Queue(ctx.settings.delivery_queue_name, connection=ctx.redis).empty()
    kill_the_next_attempt(monkeypatch)
    with pytest.raises(Killed):
        attempt_delivery(ctx, delivery_id, client=client)
    monkeypatch.undo()  # and RQ gave up on the job

    later = time.time() + LOST_AFTER_SECONDS + 1
    assert sweep_deliveries(ctx, now=later) == [delivery_id]
    delivery = ctx.deliveries.get(delivery_id)
    assert [a.error for a in delivery.attempts] == [INTERRUPTED]
    assert delivery.status == "pending" and delivery.next_attempt_at >= later
    scheduled = ScheduledJobRegistry(ctx.settings.delivery_queue_name, connection=ctx.redis)
    assert len(scheduled.get_job_ids()) == 1
