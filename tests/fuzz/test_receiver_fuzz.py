"""Hostile requests at `POST /webhooks/codat` through Flask's test client on
fakeredis (fast, so hypothesis can try hundreds of them).

For every request: no 5xx (503 only when Redis is down), every error is our
JSON shape, the answer is logged with the request's context, and nothing is
stored unless the `svix` library accepts the signature over these exact
bytes; a stored webhook is stored once.
"""

from __future__ import annotations

import fakeredis
import pytest
from hypothesis import HealthCheck, event, given, settings

from tests.fuzz.strategies import WebhookRequest, validly_signed, webhook_requests
from tests.fuzz.support import (
    REDIS_DOWN,
    build_app,
    check_error_shape,
    check_logged,
    check_status,
)

pytestmark = pytest.mark.resilience

FUZZ = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
PATH = "/webhooks/codat"
RECEIVER_STATUSES = {200, 202, 400, 401, 413, 415}


@pytest.fixture(scope="module")
def receiver():
    server = fakeredis.FakeServer()
    redis = fakeredis.FakeRedis(server=server)
    app, logs = build_app(redis)
    return app.test_client(), redis, logs


def stored(redis) -> tuple[int, int]:
    inbox = redis.xlen("authflow:inbox") if redis.exists("authflow:inbox") else 0
    return inbox, len(redis.keys("authflow:seen:*"))


def send(client, request: WebhookRequest):
    return client.post(PATH, data=request.body, headers=request.headers)


@FUZZ
@given(request=webhook_requests())
def test_no_answer_is_a_5xx_and_nothing_unsigned_is_stored(receiver, request):
    client, redis, logs = receiver
    before = stored(redis)
    with logs.collect() as lines:
        response = send(client, request)
    after = stored(redis)
    event(f"{response.status_code} {request.intended}")

    error = check_error_shape(response.status_code, response.data)
    check_status(response.status_code, error, allowed_5xx=set())
    assert response.status_code in RECEIVER_STATUSES, (response.status_code, error)
    check_logged(lines, "POST", PATH, response.status_code)

    signed = validly_signed(request)
    if not signed:
        assert after == before, f"stored without a valid signature: {request!r:.300}"
        assert response.status_code >= 400
    if response.status_code == 202:
        assert signed
        assert after == (before[0] + 1, before[1] + 1)
    elif response.status_code == 200:
        assert signed and response.json["status"] == "duplicate"
        assert after == before
    else:
        assert after == before


@FUZZ
@given(request=webhook_requests())
def test_a_valid_webhook_sent_twice_is_stored_once(receiver, request):
    client, redis, _ = receiver
    first = send(client, request)
    before = stored(redis)
    again = send(client, request)
    assert stored(redis) == before
    if first.status_code in (200, 202):
        assert again.status_code == 200 and again.json["status"] == "duplicate"
    else:
        assert again.status_code == first.status_code


@settings(FUZZ, max_examples=150)
@given(request=webhook_requests())
def test_with_redis_down_the_only_5xx_is_503_and_it_is_logged(request):
    server = fakeredis.FakeServer()
    server.connected = False  # every command raises ConnectionError
    app, logs = build_app(fakeredis.FakeRedis(server=server))
    with logs.collect() as lines:
        response = send(app.test_client(), request)
    error = check_error_shape(response.status_code, response.data)
    check_status(response.status_code, error, allowed_5xx=REDIS_DOWN)
    check_logged(lines, "POST", PATH, response.status_code)
    if response.status_code == 503:
        assert validly_signed(request), "Redis is only reached after the signature holds"
        assert response.headers.get("Retry-After")
