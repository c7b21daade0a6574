"""Relay and delivery, in-process against fakeredis and a real local HTTP subscriber."""

from __future__ import annotations

import time

import fakeredis
import pytest
from rq import Queue

from codat_authflow.bootstrap import Services
from codat_authflow.delivery.attempts import attempt_delivery, replay_dead_letters
from codat_authflow.delivery.sender import make_client
from codat_authflow.settings import Settings
from tests.support.lifecycles import build
from tests.support.signing import encode_body
from tests.support.subscriber import Subscriber
from workers.jobs import drain

ENV = {
    "REDIS_URL": "redis://unused",
    "API_TOKEN": "t",
    "CODAT_WEBHOOK_SECRETS": "whsec_dGVzdC1zZWNyZXQ=",
    "ALLOW_PRIVATE_SUBSCRIBER_URLS": "1",
    "DELIVERY_RETRY_SCHEDULE": "0,5,60",
}


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


def subscribe(ctx, subscriber, event_types=("*",)):
    subscription = ctx.subscriptions.create(subscriber.url, event_types)
    subscriber.set(secret=subscription.secrets[0].secret)
    return subscription


def run_lifecycle(ctx, kind="happy_path"):
    life, _ = build(kind)
    for n, body in enumerate(life.events):
        ctx.inbox.accept(f"{life.company_id}-{n}", encode_body(body), 0)
    drain(ctx)
    return life


def queued_delivery_ids(ctx):
    """Deliveries due now in the schedule (oldest first)."""
    ids = ctx.redis.zrangebyscore(ctx.deliveries.pending, "-inf", time.time())
    return [i.decode() for i in ids]


def pump_jobs(ctx):
    queue = Queue(ctx.settings.delivery_queue_name, connection=ctx.redis)
    return [job.func_name for job in queue.jobs]


def test_each_change_becomes_a_signed_delivery_the_subscriber_verifies(ctx, client, subscriber):
    subscribe(ctx, subscriber)
    life = run_lifecycle(ctx)
    ids = queued_delivery_ids(ctx)
    assert len(ids) == 5  # four state changes and company.ready
    assert pump_jobs(ctx) == ["workers.notify.pump"]  # one pump for all of them
    for delivery_id in ids:
        assert attempt_delivery(ctx, delivery_id, client=client) == "delivered"
    assert subscriber.state.rejected == 0
    types = sorted(r.envelope["type"] for r in subscriber.received)
    assert types == ["company.ready"] + ["company.state_changed"] * 4
    ready = subscriber.of_type("company.ready")[0]
    assert ready.envelope["data"]["companyId"] == life.company_id
    assert ready.webhook_id == ready.envelope["id"]
    assert set(ready.envelope) == {"id", "type", "timestamp", "data"}


def test_subscriptions_only_get_the_types_they_asked_for(ctx, client, subscriber):
    subscribe(ctx, subscriber, ["company.ready"])
    run_lifecycle(ctx)
    ids = queued_delivery_ids(ctx)
    assert len(ids) == 1
    attempt_delivery(ctx, ids[0], client=client)
    assert [r.envelope["type"] for r in subscriber.received] == ["company.ready"]


def test_relaying_twice_creates_nothing_twice(ctx, subscriber):
    subscribe(ctx, subscriber, ["company.ready"])
    run_lifecycle(ctx)
    drain(ctx)
    assert len(queued_delivery_ids(ctx)) == 1


def test_a_failed_attempt_is_recorded_and_retried_on_schedule(ctx, client, subscriber):
    subscription = subscribe(ctx, subscriber, ["company.ready"])
    run_lifecycle(ctx)
    [delivery_id] = queued_delivery_ids(ctx)
    subscriber.set(fail_next=1)
    assert attempt_delivery(ctx, delivery_id, client=client) == "pending"
    delivery = ctx.deliveries.get(delivery_id)
    [attempt] = delivery.attempts
    assert attempt.status_code == 500 and attempt.error == "HTTP 500"
    assert 4.4 <= delivery.next_attempt_at - attempt.at <= 5.6  # 5 s with 10 % jitter
    assert ctx.redis.zscore(ctx.deliveries.pending, delivery_id) == delivery.next_attempt_at
    assert queued_delivery_ids(ctx) == []  # not due yet
    assert ctx.subscriptions.get(subscription.id).failing_since is not None
    assert attempt_delivery(ctx, delivery_id, client=client) == "delivered"
    assert ctx.subscriptions.get(subscription.id).failing_since is None
    assert len(ctx.deliveries.get(delivery_id).attempts) == 2


def test_after_the_last_attempt_a_delivery_is_dead_and_can_be_replayed(ctx, client, subscriber):
    subscription = subscribe(ctx, subscriber, ["company.ready"])
    life = run_lifecycle(ctx)
    [delivery_id] = queued_delivery_ids(ctx)
    subscriber.stop()  # connections refused
    statuses = [attempt_delivery(ctx, delivery_id, client=client) for _ in range(3)]
    assert statuses == ["pending", "pending", "dead"]
    dead = ctx.deliveries.dead_letters()
    assert [d.id for d in dead] == [delivery_id]
    assert all(a.status_code is None and a.error for a in dead[0].attempts)
    assert ctx.deliveries.dead_letters(company_id="someone else") == []
    assert ctx.deliveries.dead_letters(subscription_id=subscription.id) == dead

    subscriber.start()
    assert replay_dead_letters(ctx, company_id=life.company_id) == [delivery_id]
    assert ctx.deliveries.dead_letters() == []
    assert attempt_delivery(ctx, delivery_id, client=client) == "delivered"
    delivery = ctx.deliveries.get(delivery_id)
    assert delivery.replays == 1 and len(delivery.attempts) == 4
    assert len(subscriber.of_type("company.ready")) == 1


def test_a_subscription_failing_for_five_days_is_disabled(ctx):
    subscription = ctx.subscriptions.create("http://127.0.0.1:9/x", ["*"])
    start = time.time()
    assert not ctx.subscriptions.record_failure(subscription.id, start)
    assert not ctx.subscriptions.record_failure(subscription.id, start + 4 * 86400)
    assert ctx.subscriptions.record_failure(subscription.id, start + 5 * 86400 + 1)
    disabled = ctx.subscriptions.get(subscription.id)
    assert not disabled.enabled and "5 days" in disabled.disabled_reason
    reenabled = ctx.subscriptions.update(subscription.id, enabled=True)
    assert reenabled.enabled and reenabled.failing_since is None


def test_deliveries_to_a_private_address_are_refused_without_the_flag(client, subscriber):
    ctx = Services.build(
        Settings.from_env({**ENV, "ALLOW_PRIVATE_SUBSCRIBER_URLS": "0"}), fakeredis.FakeRedis()
    )
    ctx.inbox.ensure_group()
    subscribe(ctx, subscriber, ["company.ready"])  # stored directly, as if the DNS changed
    run_lifecycle(ctx)
    [delivery_id] = queued_delivery_ids(ctx)
    assert attempt_delivery(ctx, delivery_id, client=client) == "pending"
    [attempt] = ctx.deliveries.get(delivery_id).attempts
    assert "non-public address" in attempt.error
    assert subscriber.state.requests == 0


def test_redirects_are_not_followed(ctx, client):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self):
            self.send_response(307)
            self.send_header("Location", "http://169.254.169.254/")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        ctx.subscriptions.create(f"http://127.0.0.1:{server.server_port}/", ["company.ready"])
        run_lifecycle(ctx)
        [delivery_id] = queued_delivery_ids(ctx)
        assert attempt_delivery(ctx, delivery_id, client=client) == "pending"
        assert ctx.deliveries.get(delivery_id).attempts[0].status_code == 307
    finally:
        server.shutdown()
