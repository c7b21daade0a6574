"""The receiver's contract: every answer, and nothing stored unless verified."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import fakeredis
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from app import create_app
from tests.support.lifecycles import Lifecycle, new_connection, spec_example
from tests.support.logs import LogCapture
from tests.support.signing import encode_body, signed_headers

SECRET = "whsec_" + "dGVzdC1zZWNyZXQtZm9yLXVuaXQtdGVzdHMtMDAwMDAw"
OLD_SECRET = "whsec_" + "b2xkLXNlY3JldC1zdGlsbC1hY2NlcHRlZC0xMjM0NTY3"
ENV = {
    "REDIS_URL": "redis://unused",
    "API_TOKEN": "api-token",
    "CODAT_WEBHOOK_SECRETS": f"{SECRET},{OLD_SECRET}",
}


@pytest.fixture
def redis():
    return fakeredis.FakeRedis()


@pytest.fixture
def client(redis):
    return create_app(ENV, redis=redis).test_client()


def body_of(event_type="connection.connected"):
    life = Lifecycle()
    if event_type.startswith("connection."):
        return encode_body(life.connection(event_type, new_connection()))
    if event_type.startswith("company."):
        return encode_body(life.company(event_type))
    return encode_body(life.read(event_type, new_connection()))


def post(client, body: bytes, headers: dict[str, str]):
    return client.post("/webhooks/codat", data=body, headers=headers)


def stored_keys(redis) -> list[bytes]:
    return sorted(redis.keys("authflow:*"))


def test_a_verified_webhook_is_queued_and_stored(client, redis):
    body = body_of()
    response = post(client, body, signed_headers(SECRET, body, webhook_id="msg_1"))
    assert response.status_code == 202
    assert response.json == {"status": "queued", "webhookId": "msg_1"}
    [(_, fields)] = redis.xrange("authflow:inbox")
    assert fields[b"body"] == body and fields[b"webhook_id"] == b"msg_1"
    assert redis.exists("authflow:seen:msg_1")
    assert redis.ttl("authflow:seen:msg_1") >= 72 * 3600 - 5
    assert len(redis.lrange("rq:queue:authflow", 0, -1)) == 1  # a drain job


def test_the_same_webhook_id_again_is_a_duplicate_and_stored_once(client, redis):
    body = body_of()
    headers = signed_headers(SECRET, body, webhook_id="msg_dup")
    assert post(client, body, headers).status_code == 202
    response = post(client, body, headers)
    assert response.status_code == 200
    assert response.json["status"] == "duplicate"
    assert redis.xlen("authflow:inbox") == 1


def test_only_one_drain_job_is_queued_while_one_waits(client, redis):
    for _ in range(5):
        body = body_of()
        assert post(client, body, signed_headers(SECRET, body)).status_code == 202
    assert redis.xlen("authflow:inbox") == 5
    assert len(redis.lrange("rq:queue:authflow", 0, -1)) == 1


def test_svix_prefixed_headers_are_accepted(client):
    body = body_of()
    assert post(client, body, signed_headers(SECRET, body, prefix="svix")).status_code == 202


def test_a_previous_secret_still_verifies_during_rotation(client):
    body = body_of()
    assert post(client, body, signed_headers(OLD_SECRET, body)).status_code == 202


def test_one_good_signature_among_several_is_enough(client):
    body = body_of()
    headers = signed_headers(SECRET, body)
    other = signed_headers(
        "whsec_" + "c29tZW9uZS1lbHNlcy1zZWNyZXQtMDAwMDAwMDAwMDAw",
        body,
        webhook_id=headers["webhook-id"],
    )
    headers["webhook-signature"] = f"{other['webhook-signature']} {headers['webhook-signature']}"
    assert post(client, body, headers).status_code == 202


def test_unhandled_event_types_are_accepted(client, redis):
    body = encode_body(spec_example("client.rateLimit.reached"))
    assert post(client, body, signed_headers(SECRET, body)).status_code == 202
    assert redis.xlen("authflow:inbox") == 1


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b["payload"]["connection"].update(status="Suspended"),
        lambda b: b["payload"]["connection"].update(sourceType="Telepathy"),
        lambda b: b["payload"]["connection"].update(status=None),
    ],
    ids=["connection status", "source type", "null status"],
)
def test_values_codat_may_add_are_accepted_not_retried_for_28_hours(client, redis, mutate):
    event = Lifecycle().connection("connection.disconnected", new_connection())
    mutate(event)
    body = encode_body(event)
    assert post(client, body, signed_headers(SECRET, body)).status_code == 202
    assert redis.xlen("authflow:inbox") == 1


def test_an_unknown_read_status_is_accepted(client, redis):
    event = Lifecycle().read("read.completed", new_connection(), status="Throttled")
    body = encode_body(event)
    assert post(client, body, signed_headers(SECRET, body)).status_code == 202
    assert redis.xlen("authflow:inbox") == 1


def _tampered_body(body, headers):
    return body.replace(b"Linked", b"Unlinked"), headers


def _wrong_secret(body, headers):
    forged = signed_headers(
        "whsec_" + "YXR0YWNrZXItc2VjcmV0LTAwMDAwMDAwMDAwMDAwMDAw",
        body,
        webhook_id=headers["webhook-id"],
    )
    return body, forged


def _missing(name):
    def mutate(body, headers):
        headers.pop(name)
        return body, headers

    return mutate


def _set(name, value):
    def mutate(body, headers):
        headers[name] = value
        return body, headers

    return mutate


def _stale(minutes):
    def mutate(body, headers):
        moment = datetime.now(UTC) + timedelta(minutes=minutes)
        return body, signed_headers(SECRET, body, timestamp=moment)

    return mutate


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (_tampered_body, "bad_signature"),
        (_wrong_secret, "bad_signature"),
        (_missing("webhook-signature"), "missing_headers"),
        (_missing("webhook-id"), "missing_headers"),
        (_missing("webhook-timestamp"), "missing_headers"),
        (_set("webhook-signature", "v1,not-base64!!"), "bad_signature"),
        (_set("webhook-signature", "garbage"), "bad_signature"),
        (_set("webhook-signature", "v2,abc"), "bad_signature"),
        (_set("webhook-timestamp", "yesterday"), "bad_signature"),
        (_stale(-6), "stale"),
        (_stale(+6), "stale"),
    ],
)
def test_unverifiable_webhooks_get_401_and_leave_nothing(client, redis, mutate, code):
    body = body_of()
    body, headers = mutate(body, signed_headers(SECRET, body))
    response = post(client, body, headers)
    assert response.status_code == 401
    assert response.json["error"]["code"] == code
    assert stored_keys(redis) == []
    assert redis.keys("rq:*") == []


def test_a_body_that_is_not_utf8_is_a_bad_signature_not_a_crash(client, redis):
    body = b'{"id": "\xff\xfe"}'
    headers = signed_headers(SECRET, b"{}")
    assert post(client, body, headers).status_code == 401
    assert stored_keys(redis) == []


def test_signature_within_the_5_minute_window_is_accepted(client):
    body = body_of()
    moment = datetime.now(UTC) - timedelta(minutes=4)
    assert post(client, body, signed_headers(SECRET, body, timestamp=moment)).status_code == 202


def test_configured_authorization_header_is_required_too(redis):
    client = create_app(
        {**ENV, "CODAT_WEBHOOK_AUTHORIZATION": "Basic Y29kYXQ6c2VjcmV0"}, redis=redis
    ).test_client()
    body = body_of()
    headers = signed_headers(SECRET, body)
    assert post(client, body, headers).status_code == 401
    assert post(client, body, {**headers, "Authorization": "Basic wrong"}).status_code == 401
    assert stored_keys(redis) == []
    ok = {**headers, "Authorization": "Basic Y29kYXQ6c2VjcmV0"}
    assert post(client, body, ok).status_code == 202


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "not a Codat webhook"),
        (
            json.dumps({"eventType": "x", "generatedDate": "2024-01-01", "payload": {}}).encode(),
            "not a Codat webhook",
        ),
        (
            json.dumps({"id": "1", "generatedDate": "2024-01-01", "payload": {}}).encode(),
            "not a Codat webhook",
        ),
        (
            json.dumps({"id": "1", "eventType": "company.created", "payload": {}}).encode(),
            "not a Codat webhook",
        ),
        (
            json.dumps({"id": "1", "eventType": "x", "generatedDate": "2024-01-01"}).encode(),
            "not a Codat webhook",
        ),
        (
            json.dumps(
                {"id": "1", "eventType": "x", "generatedDate": "soon", "payload": {}}
            ).encode(),
            "ISO 8601",
        ),
        (
            json.dumps(
                {
                    "id": "1",
                    "eventType": "connection.created",
                    "generatedDate": "2024-01-01",
                    "payload": {},
                }
            ).encode(),
            "referenceCompany",
        ),
        (b"[" * 100_000 + b"]" * 100_000, ""),
    ],
)
def test_signed_but_malformed_bodies_get_400_and_leave_nothing(client, redis, body, fragment):
    response = post(client, body, signed_headers(SECRET, body))
    assert response.status_code == 400
    error = response.json["error"]
    assert error["code"] == "invalid_body"
    assert fragment in error["message"]
    assert stored_keys(redis) == []


def test_missing_fields_are_named(client):
    body = json.dumps({"id": "1", "payload": {}}).encode()
    details = post(client, body, signed_headers(SECRET, body)).json["error"]["details"]
    assert set(details) == {"eventType", "generatedDate"}


def test_bodies_over_1_mib_get_413_and_leave_nothing(client, redis):
    body = b'{"pad": "' + b"x" * (1024 * 1024) + b'"}'
    response = post(client, body, signed_headers(SECRET, body))
    assert response.status_code == 413
    assert response.json["error"]["status"] == 413
    assert stored_keys(redis) == []


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_non_json_content_gets_415_and_leaves_nothing(client, redis, content_type):
    body = body_of()
    headers = signed_headers(SECRET, body)
    if content_type is None:
        headers.pop("Content-Type")
    else:
        headers["Content-Type"] = content_type
    response = post(client, body, headers)
    assert response.status_code == 415
    assert stored_keys(redis) == []


def test_json_with_charset_is_fine(client):
    body = body_of()
    headers = {**signed_headers(SECRET, body), "Content-Type": "application/json; charset=utf-8"}
    assert post(client, body, headers).status_code == 202


class _DownRedis(fakeredis.FakeRedis):
    def execute_command(self, *args, **kwargs):
        raise RedisConnectionError("Connection refused")

    def evalsha(self, *args, **kwargs):
        raise RedisConnectionError("Connection refused")


def test_unreachable_redis_is_a_503_so_codat_retries():
    client = create_app(ENV, redis=_DownRedis()).test_client()
    body = body_of()
    response = post(client, body, signed_headers(SECRET, body))
    assert response.status_code == 503
    assert response.json["error"]["code"] == "storage_unavailable"
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200


def test_secrets_and_signatures_never_reach_the_logs(client, logs):
    body = body_of()
    headers = signed_headers(SECRET, body)
    post(client, body, headers)
    tampered = body.replace(b"Linked", b"Unlinked")
    post(client, tampered, headers)
    logged = logs.text
    lines = logs.lines()
    assert [line["outcome"] for line in lines if line["event"] == "request"] == [
        "queued",
        "bad_signature",
    ]
    assert any(line["event"] == "webhook.rejected" for line in lines)
    assert SECRET[6:] not in logged
    assert headers["webhook-signature"].split(",")[1] not in logged


# -- issue 12, the receiver's smaller defects ---------------------------------------


def test_an_unsigned_old_request_is_a_bad_signature_not_stale(client):
    body = body_of()
    old = datetime.now(UTC) - timedelta(hours=1)
    headers = signed_headers(
        "whsec_" + "d3Jvbmctc2VjcmV0LW5vdC1vdXJzLTAwMDAwMDAw", body, timestamp=old
    )
    response = post(client, body, headers)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "bad_signature"
    # Signed by us but old: that one is stale.
    response = post(client, body, signed_headers(SECRET, body, timestamp=old))
    assert response.get_json()["error"]["code"] == "stale"


class _BrokenScriptRedis(fakeredis.FakeRedis):
    def evalsha(self, *args, **kwargs):
        from redis.exceptions import ResponseError

        raise ResponseError("NOSCRIPT or a bug of ours")


def test_a_redis_error_that_is_not_an_outage_is_a_500_with_a_clear_code():
    client = create_app(ENV, redis=_BrokenScriptRedis()).test_client()
    body = body_of()
    response = post(client, body, signed_headers(SECRET, body))
    assert response.status_code == 500
    assert response.get_json()["error"]["code"] == "storage_error"


def test_long_webhook_ids_are_deduplicated_on_the_whole_id(client, redis):
    prefix = "msg_" + "a" * 300
    first, second = body_of(), body_of()
    one = post(client, first, signed_headers(SECRET, first, webhook_id=prefix + "1"))
    two = post(client, second, signed_headers(SECRET, second, webhook_id=prefix + "2"))
    assert (one.status_code, two.status_code) == (202, 202)
    again = post(client, first, signed_headers(SECRET, first, webhook_id=prefix + "1"))
    assert again.status_code == 200 and again.get_json()["status"] == "duplicate"


def test_an_old_request_with_a_non_ascii_signature_is_a_bad_signature_not_a_500(client):
    """Found by the fuzz suite: the stale path compared str signatures, and
    hmac.compare_digest raises TypeError on non-ASCII str."""
    body = body_of()
    old = datetime.now(UTC) - timedelta(hours=1)
    headers = {**signed_headers(SECRET, body, timestamp=old), "webhook-signature": "v1,é"}
    response = post(client, body, headers)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "bad_signature"


# -- issue 15: the receiver as its own WSGI application, msgspec for the envelope --------


@pytest.mark.parametrize(
    "odd_but_valid",
    [
        b'"\\ud800"',  # a lone surrogate escape: valid JSON, refused by msgspec
        b"1e400",  # past a double's range: valid JSON, refused by msgspec
        b"123456789012345678901234567890",
    ],
)
def test_what_msgspec_refuses_the_standard_parser_decides(client, redis, odd_but_valid):
    """The fast parser must never refuse a body the standard library accepts:
    a 400 would have Codat retry a good webhook for 28 hours."""
    life = Lifecycle()
    event = life.company("company.created")
    event["payload"]["odd"] = "__ODD__"
    body = encode_body(event).replace(b'"__ODD__"', odd_but_valid)
    json.loads(body)  # valid JSON, as far as Python is concerned
    response = post(client, body, signed_headers(SECRET, body))
    assert response.status_code == 202, response.json
    [(_, fields)] = redis.xrange("authflow:inbox")
    assert fields[b"body"] == body  # stored as it came


@pytest.mark.parametrize("blank", ["", "   "])
def test_a_blank_id_or_event_type_is_named(client, redis, blank):
    event = Lifecycle().company("company.created")
    event["id"], event["eventType"] = blank, blank
    body = encode_body(event)
    response = post(client, body, signed_headers(SECRET, body))
    assert response.status_code == 400
    assert set(response.json["error"]["details"]) == {"id", "eventType"}
    assert stored_keys(redis) == []


def test_a_wrongly_typed_field_is_a_400_that_says_where(client, redis):
    event = Lifecycle().company("company.created")
    event["generatedDate"] = 20240101
    body = encode_body(event)
    response = post(client, body, signed_headers(SECRET, body))
    assert response.status_code == 400
    assert "generatedDate" in response.json["error"]["message"]
    assert stored_keys(redis) == []


def test_other_methods_get_a_json_405(client, redis):
    response = client.get("/webhooks/codat")
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert response.json["error"]["code"] == "method_not_allowed"
    assert stored_keys(redis) == []


def test_every_other_path_is_flasks(client):
    assert client.get("/healthz").status_code == 200
    assert client.post("/webhooks/codat/").status_code == 404  # not ours: Flask's 404
    assert client.post("/webhooks/codat/").json["error"]["code"] == "not_found"


def test_an_unexpected_error_is_a_logged_json_500_not_a_traceback_page():
    class Exploding(fakeredis.FakeRedis):
        def evalsha(self, *args, **kwargs):
            raise RuntimeError("a bug of ours")

    client = create_app(ENV, redis=Exploding()).test_client()
    capture = LogCapture()  # after create_app, which points logging at stdout
    try:
        body = body_of()
        response = post(client, body, signed_headers(SECRET, body))
        assert response.status_code == 500
        assert response.json["error"]["code"] == "internal_error"
        [line] = [x for x in capture.lines() if x["event"] == "request.unhandled_error"]
        assert "RuntimeError: a bug of ours" in line["exception"]
        [request_line] = capture.lines("authflow.request")
        assert request_line["status"] == 500 and request_line["outcome"] == "error"
    finally:
        capture.close()
