"""`codat webhooks setup|list` and the webhook-consumer calls, against Prism
serving Codat's spec (every request is checked against it)."""

from __future__ import annotations

import json

import pytest

from codat_authflow.journey.codat import CodatClient
from codat_authflow.journey.webhook_consumers import SUBSCRIBED_EVENT_TYPES
from tests.contract.conftest import TEST_CODAT_KEY

pytestmark = pytest.mark.contract

URL = "https://authflow.example.com/webhooks/codat"


def run(app, *args):
    return app.test_cli_runner().invoke(args=["codat", "webhooks", *args])


def test_setup_lists_then_creates_our_consumer(journey_app, codat_mock):
    result = run(journey_app, "setup", "--url", URL, "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["created"] and body["consumer"]["id"]
    assert [(c.method, c.path) for c in codat_mock.calls] == [
        ("GET", "/webhooks"),
        ("POST", "/webhooks"),
    ]
    assert codat_mock.calls[1].json() == {
        "url": URL,
        "eventTypes": list(SUBSCRIBED_EVENT_TYPES),
        "disabled": False,
    }
    assert codat_mock.calls[1].status == 201


def test_list_shows_codats_consumers(journey_app, codat_mock):
    result = run(journey_app, "list", "--json")
    assert result.exit_code == 0, result.output
    consumers = json.loads(result.output)
    assert consumers and all(c["differences"] for c in consumers)  # the spec's examples
    assert [(c.method, c.path) for c in codat_mock.calls] == [("GET", "/webhooks")]


def test_codat_errors_are_one_line_and_exit_1(journey_app, codat_mock):
    codat_mock.prefer[r"GET /webhooks"] = "code=401"
    result = run(journey_app, "setup", "--url", URL)
    assert result.exit_code == 1
    assert "list-webhook-consumers" in result.output and "401" in result.output


def test_delete_webhook_consumer_is_a_valid_call(codat_mock):
    codat = CodatClient(
        api_key=TEST_CODAT_KEY, base_url=codat_mock.url, http_client=codat_mock.http_client()
    )
    codat.delete_webhook_consumer("12571faf-0898-47e7-afdd-0fe9eb0a9bf5")
    (call,) = codat_mock.calls
    assert (call.method, call.path) == ("DELETE", "/webhooks/12571faf-0898-47e7-afdd-0fe9eb0a9bf5")
