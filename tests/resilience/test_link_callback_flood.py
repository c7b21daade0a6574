"""`GET /link/callback` under attack (issue 12, defect 1): the endpoint is
public, so a flood for one known company with random connection ids must
leave Redis growth bounded and Codat calls within the throttle; and the
endpoint is rate-limited per client address (flask-limiter on Redis).

Codat is a recording fake transport: the one real connection is answered,
every other id is a 404, as Codat's get-connection does."""

from __future__ import annotations

import json
import math
import time
import uuid

import fakeredis
import httpx
import pytest

from app import create_app
from codat_authflow.journey import link_callback
from codat_authflow.journey.codat import build_http_client
from codat_authflow.journey.service import Journey
from state_machine import parse_codat_event
from tests.support.lifecycles import Connection, Lifecycle

COMPANY = "0498e921-9b53-4396-a412-4f2f5983b0a2"
CONNECTION = "ee2eb431-c0fa-4dc9-93fa-d29781c12bcd"
XERO = Connection(CONNECTION, "Accounting", "gbol", "Xero")
ENV = {
    "REDIS_URL": "redis://unused",
    "API_TOKEN": "s3cret-token",
    "CODAT_WEBHOOK_SECRETS": "whsec_dGVzdC1zZWNyZXQ=",
    "CODAT_API_KEY": "a2V5",
    "CODAT_BASE_URL": "http://codat.invalid",
}
FLOOD = 10_000


class RecordingCodat:
    """get-connection: the real connection is PendingAuth, any other id a 404."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(f"{request.method} {request.url.path}")
        if request.url.path == f"/companies/{COMPANY}/connections/{CONNECTION}":
            return httpx.Response(
                200,
                json={
                    "id": CONNECTION,
                    "integrationId": "bf083d72-62c7-493e-aec9-81b4dbba7e2c",
                    "integrationKey": "gbol",
                    "sourceId": "8a156a5a-39cb-4f9d-856e-76ef9b9a9607",
                    "sourceType": "Accounting",
                    "platformName": "Xero",
                    "linkUrl": "https://link-api.codat.io/x",
                    "status": "PendingAuth",
                    "created": "2026-01-05T09:00:00Z",
                },
            )
        return httpx.Response(
            404,
            json={"statusCode": 404, "error": "Connection not found", "correlationId": "c"},
        )


def build(codat: RecordingCodat, **env: str):
    redis = fakeredis.FakeRedis()
    app = create_app({**ENV, **env}, redis=redis)
    services = app.extensions["authflow"]
    app.extensions["journey"] = Journey.build(
        services.settings,
        services.redis,
        services.store,
        http_client=build_http_client(
            connect_timeout=1, timeout=1, transport=httpx.MockTransport(codat)
        ),
    )
    life = Lifecycle(company_id=COMPANY)
    events = [life.company("company.created"), life.connection("connection.created", XERO)]
    app.extensions["journey"].updates.apply({COMPANY: [parse_codat_event(e) for e in events]})
    return app, redis


def outcomes_key(app) -> str:
    return app.extensions["journey"].keys.link_outcomes(COMPANY)


def test_a_flood_for_one_company_leaves_redis_bounded_and_codat_throttled():
    codat = RecordingCodat()
    app, redis = build(codat, LOG_LEVEL="WARNING")
    client = app.test_client()
    keys_before = redis.dbsize()
    started = time.time()
    junk = "x" * 2000  # the longest errorMessage the query schema takes
    for n in range(FLOOD):
        # A distributed flood: every request from another address, so the
        # per-address limiter does not stop it and the other bounds must.
        response = client.get(
            "/link/callback",
            query_string={
                "companyId": COMPANY,
                "connectionId": str(uuid.uuid4()),
                "statusCode": "500",
                "errorMessage": junk,
            },
            environ_base={"REMOTE_ADDR": f"10.{n // 65536}.{n // 256 % 256}.{n % 256}"},
        )
        assert response.status_code in (200, 400), response.status_code
    windows = math.ceil((time.time() - started) / link_callback.CHECK_WINDOW_SECONDS) + 1
    # The real connection still gets its outcome recorded.
    client.get(
        "/link/callback",
        query_string={"companyId": COMPANY, "connectionId": CONNECTION, "statusCode": "403"},
        environ_base={"REMOTE_ADDR": "192.0.2.1"},
    )

    fields = redis.hlen(outcomes_key(app))
    size = sum(len(f) + len(v) for f, v in redis.hgetall(outcomes_key(app)).items())
    print(f"flood of {FLOOD}: {fields} outcome field(s), {size} B; {len(codat.calls)} Codat calls")
    assert fields == 1  # only the connection we know belongs to the company
    assert fields <= link_callback.MAX_OUTCOMES_PER_COMPANY
    recorded = json.loads(redis.hget(outcomes_key(app), CONNECTION))
    assert recorded["outcome"] == "cancelled"
    assert 1 < len(codat.calls) <= link_callback.COMPANY_CHECKS_PER_WINDOW * windows + 1
    # Throttle counters and per-connection markers: a handful of keys, all with
    # a TTL. The limiter keeps one counter per client address (TTL one minute).
    ours = [k for k in redis.keys("*") if not k.startswith(b"LIMITS:")]
    assert len(ours) - keys_before < 20, sorted(ours)
    assert all(redis.ttl(k) > 0 for k in ours if b":link:check" in k)
    limiter_keys = redis.keys("LIMITS:*")
    assert all(0 < redis.ttl(k) <= 60 for k in limiter_keys[:100])


def test_outcomes_per_company_are_bounded(monkeypatch):
    codat = RecordingCodat()
    app, redis = build(codat)
    journey = app.extensions["journey"]
    monkeypatch.setattr(link_callback, "MAX_OUTCOMES_PER_COMPANY", 3)
    from codat_authflow.journey.link_callback import record_outcome

    for n in range(10):
        record_outcome(journey, COMPANY, f"conn-{n}", {"outcome": "error", "at": f"2026-{n:02d}"})
    assert sorted(k.decode() for k in redis.hkeys(outcomes_key(app))) == [
        "conn-7",
        "conn-8",
        "conn-9",
    ]


def test_codat_checks_are_throttled_globally(monkeypatch):
    codat = RecordingCodat()
    app, _ = build(codat)
    monkeypatch.setattr(link_callback, "GLOBAL_CHECKS_PER_WINDOW", 2)
    client = app.test_client()
    for n in range(10):
        client.get(
            "/link/callback",
            query_string={"companyId": COMPANY, "connectionId": str(uuid.uuid4())},
            environ_base={"REMOTE_ADDR": f"10.0.0.{n}"},
        )
    assert len(codat.calls) == 2


def test_the_endpoint_is_rate_limited_per_client_address():
    app, _ = build(RecordingCodat())
    client = app.test_client()
    query = {"companyId": COMPANY, "connectionId": CONNECTION, "statusCode": "403"}
    statuses = [
        client.get(
            "/link/callback", query_string=query, environ_base={"REMOTE_ADDR": "10.0.0.1"}
        ).status_code
        for _ in range(40)
    ]
    assert statuses[0] == 200 and statuses[-1] == 429
    other = client.get(
        "/link/callback", query_string=query, environ_base={"REMOTE_ADDR": "10.0.0.2"}
    )
    assert other.status_code == 200
    # Without TRUSTED_PROXIES, X-Forwarded-For is the client's word, not an address.
    spoofed = client.get(
        "/link/callback",
        query_string=query,
        headers={"X-Forwarded-For": "203.0.113.9"},
        environ_base={"REMOTE_ADDR": "10.0.0.1"},
    )
    assert spoofed.status_code == 429


def test_behind_trusted_proxies_the_forwarded_address_is_limited():
    app, _ = build(RecordingCodat(), TRUSTED_PROXIES="1")
    client = app.test_client()
    query = {"companyId": COMPANY, "connectionId": CONNECTION, "statusCode": "403"}

    def get(address: str) -> int:
        return client.get(
            "/link/callback",
            query_string=query,
            headers={"X-Forwarded-For": address},
            environ_base={"REMOTE_ADDR": "127.0.0.1"},  # the proxy
        ).status_code

    statuses = [get("203.0.113.9") for _ in range(40)]
    assert statuses[0] == 200 and statuses[-1] == 429
    assert get("203.0.113.10") == 200  # another client behind the same proxy


@pytest.mark.parametrize("value", ["-1", "x"])
def test_trusted_proxies_must_be_a_count(value):
    from codat_authflow.settings import ConfigError, Settings

    with pytest.raises(ConfigError, match="TRUSTED_PROXIES"):
        Settings.from_env({**ENV, "TRUSTED_PROXIES": value})


def test_webhooks_and_the_api_are_never_rate_limited():
    """Codat delivers many webhooks from few addresses, and the host app calls
    the API from one: neither may meet the public page's per-address limit
    (and webhooks skip the limiter's lookups altogether)."""
    app, redis = build(RecordingCodat())
    client = app.test_client()
    address = {"REMOTE_ADDR": "10.0.0.1"}
    headers = {"Authorization": f"Bearer {ENV['API_TOKEN']}"}
    statuses = {client.get("/healthz", environ_base=address).status_code for _ in range(40)}
    statuses |= {
        client.get(f"/api/companies/{COMPANY}", headers=headers, environ_base=address).status_code
        for _ in range(40)
    }
    assert statuses == {200}
    from tests.support.signing import encode_body, signed_headers

    hooks = set()
    for _ in range(40):
        body = encode_body(Lifecycle(company_id=COMPANY).company("company.created"))
        hooks.add(
            client.post(
                "/webhooks/codat",
                data=body,
                headers={
                    **signed_headers(ENV["CODAT_WEBHOOK_SECRETS"], body),
                    "Content-Type": "application/json",
                },
                environ_base=address,
            ).status_code
        )
    assert hooks == {202}
    assert redis.keys("LIMITS:*") == []
