"""Issue 12, defect 5: dead letters are pruned with their record, the
dead-letter filter applies before its limit, and deleting a subscription
leaves nothing of its deliveries without a TTL."""

from __future__ import annotations

import time

import fakeredis
import pytest

from app import create_app
from codat_authflow.storage import deliveries as deliveries_module
from codat_authflow.storage.deliveries import (
    FINISHED_TTL_SECONDS,
    Attempt,
    Delivery,
    DeliveryStore,
    delivery_id,
)
from codat_authflow.storage.keys import Keys

ENV = {
    "REDIS_URL": "redis://unused",
    "API_TOKEN": "api-token",
    "CODAT_WEBHOOK_SECRETS": "whsec_dGVzdC1zZWNyZXQ=",
    "ALLOW_PRIVATE_SUBSCRIBER_URLS": "1",
}
AUTH = {"Authorization": "Bearer api-token"}


@pytest.fixture
def redis():
    return fakeredis.FakeRedis()


@pytest.fixture
def store(redis):
    return DeliveryStore(redis, Keys())


def put(store, n, subscription_id, status="dead", died_at=None):
    died_at = time.time() if died_at is None else died_at
    delivery = Delivery(
        id=delivery_id(f"evt_{n}", subscription_id),
        subscription_id=subscription_id,
        notification_id=f"evt_{n}",
        type="company.ready",
        company_id=f"company-{n}",
        body="{}",
        created_at=died_at - 60,
        status=status,
        attempts=(Attempt(died_at, 500, 3, "HTTP 500"),),
    )
    with store.redis.pipeline(transaction=True) as pipe:
        store.save(pipe, delivery, new=True)
        pipe.execute()
    return delivery


def test_a_dead_letter_whose_record_expired_leaves_the_index(store, redis):
    put(store, 1, "sub_a", died_at=time.time() - FINISHED_TTL_SECONDS - 7200)
    live = put(store, 2, "sub_a")
    assert redis.zcard(Keys().dead_deliveries) == 2
    assert store.prune_dead_letters() == 1  # by age: its record has expired by now
    assert redis.zcard(Keys().dead_deliveries) == 1
    redis.delete(Keys().delivery(live.id))  # expired early, or removed
    assert store.dead_letters() == []
    assert redis.zcard(Keys().dead_deliveries) == 0  # pruned on the way


def test_the_filter_applies_before_the_limit(store, monkeypatch):
    monkeypatch.setattr(deliveries_module, "DEAD_LETTER_PAGE", 2)
    now = time.time()
    for n in range(5):
        put(store, n, "sub_a", died_at=now - 100 + n)
    wanted = put(store, 99, "sub_b", died_at=now)
    assert [d.id for d in store.dead_letters(subscription_id="sub_b", limit=3)] == [wanted.id]
    assert len(store.dead_letters(subscription_id="sub_a", limit=3)) == 3
    assert len(store.dead_letters(limit=10)) == 6


def test_deleting_a_subscription_leaves_no_delivery_without_a_ttl(redis):
    client = create_app(ENV, redis=redis).test_client()
    created = client.post(
        "/api/subscriptions",
        headers=AUTH,
        json={"url": "http://127.0.0.1:9/hooks", "eventTypes": ["*"]},
    )
    assert created.status_code == 201, created.data
    subscription_id = created.json["id"]
    store = DeliveryStore(redis, Keys())
    pending = put(store, 1, subscription_id, status="pending")
    assert redis.ttl(Keys().delivery(pending.id)) == -1

    assert client.delete(f"/api/subscriptions/{subscription_id}", headers=AUTH).status_code == 204
    assert store.get(pending.id).status == "cancelled"
    assert 0 < redis.ttl(Keys().delivery(pending.id)) <= FINISHED_TTL_SECONDS
    assert 0 < redis.ttl(Keys().subscription_deliveries(subscription_id)) <= FINISHED_TTL_SECONDS
    assert redis.zcard(Keys().pending_deliveries) == 0
