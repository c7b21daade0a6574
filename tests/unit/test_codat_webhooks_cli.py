"""`flask --app app codat webhooks setup|list`: one consumer for our URL with
exactly the event types this service acts on, whatever number of runs.

`StubConsumers` stands in for our adapter (`CodatClient`) and keeps the
consumers like Codat would; the HTTP calls are contract-tested against Prism
(tests/contract/test_codat_webhooks.py)."""

from __future__ import annotations

import copy
import json
import uuid

import fakeredis
import pytest

from app import create_app
from codat_authflow.journey.service import Journey
from codat_authflow.journey.webhook_consumers import SUBSCRIBED_EVENT_TYPES

ENV = {
    "REDIS_URL": "redis://unused",
    "API_TOKEN": "t",
    "CODAT_WEBHOOK_SECRETS": "whsec_dGVzdC1zZWNyZXQ=",
    "CODAT_API_KEY": "key",
}
URL = "https://authflow.example.com/webhooks/codat"


class StubConsumers:
    def __init__(self):
        self.consumers: list[dict] = []
        self.calls: list[str] = []

    def list_webhook_consumers(self):
        self.calls.append("list-webhook-consumers")
        return copy.deepcopy(self.consumers)

    def create_webhook_consumer(self, url, event_types):
        self.calls.append("create-webhook-consumer")
        consumer = {"id": str(uuid.uuid4()), "url": url, "eventTypes": event_types}
        consumer["disabled"] = False
        self.consumers.append(consumer)
        return copy.deepcopy(consumer)

    def delete_webhook_consumer(self, webhook_id):
        self.calls.append("delete-webhook-consumer")
        self.consumers = [c for c in self.consumers if c["id"] != webhook_id]


@pytest.fixture
def codat():
    return StubConsumers()


@pytest.fixture
def app(codat):
    app = create_app(ENV, redis=fakeredis.FakeRedis())
    services = app.extensions["authflow"]
    app.extensions["journey"] = Journey.build(
        services.settings, services.redis, services.store, codat=codat
    )
    return app


def run(app, *args):
    return app.test_cli_runner().invoke(args=["codat", "webhooks", *args])


def test_the_event_types_are_exactly_those_the_service_acts_on():
    assert SUBSCRIBED_EVENT_TYPES == (
        "client.rateLimit.reached",
        "client.rateLimit.reset",
        "company.created",
        "company.deleted",
        "connection.connected",
        "connection.created",
        "connection.deleted",
        "connection.disconnected",
        "connection.failed",
        "connection.reconnected",
        "read.completed",
        "read.completed.initial",
    )


def test_setup_twice_creates_one_consumer_and_says_what_to_do_with_the_secret(app, codat):
    first = run(app, "setup", "--url", URL)
    assert first.exit_code == 0, first.output
    assert f"created Codat webhook consumer {codat.consumers[0]['id']} for {URL}" in first.output
    assert "Signing secret" in first.output and "CODAT_WEBHOOK_SECRETS" in first.output
    assert "4.159.114.108" in first.output and "20.117.190.191" in first.output
    second = run(app, "setup", "--url", URL + "/")
    assert second.exit_code == 0, second.output
    assert "already there:" in second.output
    assert len(codat.consumers) == 1
    assert codat.calls == [
        "list-webhook-consumers",
        "create-webhook-consumer",
        "list-webhook-consumers",
    ]
    assert codat.consumers[0]["eventTypes"] == list(SUBSCRIBED_EVENT_TYPES)


def test_a_consumer_with_other_event_types_is_reported_then_replaced_on_request(app, codat):
    codat.consumers.append(
        {"id": "old", "url": URL, "eventTypes": ["company.created"], "disabled": True}
    )
    refused = run(app, "setup", "--url", URL)
    assert refused.exit_code == 1
    assert "differs from ours" in refused.output and "--replace" in refused.output
    assert "missingEventTypes" in refused.output and '"disabled": true' in refused.output
    assert [c["id"] for c in codat.consumers] == ["old"]

    replaced = run(app, "setup", "--url", URL, "--replace", "--json")
    assert replaced.exit_code == 0, replaced.output
    body = json.loads(replaced.output)
    assert body["created"] and body["deleted"] == ["old"]
    assert [c["id"] for c in codat.consumers] == [body["consumer"]["id"]]


def test_consumers_for_other_urls_are_left_alone(app, codat):
    other = {"id": "x", "url": "https://other.example/hook", "eventTypes": ["read.completed"]}
    codat.consumers.append(other)
    assert run(app, "setup", "--url", URL).exit_code == 0
    assert len(codat.consumers) == 2 and other in codat.consumers


@pytest.mark.parametrize("url", ["ftp://x/webhooks/codat", "/webhooks/codat", "http://host/x"])
def test_a_url_codat_cannot_deliver_to_is_refused(app, codat, url):
    result = run(app, "setup", "--url", url)
    assert result.exit_code == 2 and "--url" in result.output
    assert codat.calls == []


def test_list_shows_each_consumer_and_whether_it_matches(app, codat):
    run(app, "setup", "--url", URL)
    codat.consumers.append({"id": "x", "url": "https://other.example/hook", "eventTypes": []})
    text = run(app, "list")
    assert text.exit_code == 0
    assert "matches this service" in text.output and "differs" in text.output
    listed = json.loads(run(app, "list", "--json").output)
    assert [c["differences"] == {} for c in listed] == [True, False]


def test_without_a_codat_key_the_commands_say_so():
    app = create_app({k: v for k, v in ENV.items() if k != "CODAT_API_KEY"}, redis=None)
    result = run(app, "list")
    assert result.exit_code == 1 and "CODAT_API_KEY" in result.output
