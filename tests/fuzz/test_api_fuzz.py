"""Hostile requests at every `/api` endpoint (found in the app's URL map, so
new endpoints are fuzzed without touching this file), plus `/healthz`,
`/readyz` and `/link/callback`, through Flask's test client on fakeredis.
Codat's API is an in-process mock that fails in several ways; DNS is never
queried.

For every request: no 5xx except "a dependency is unavailable" (503 for
Redis; 502/503/504 with a `codat_*` code on the endpoints that call Codat),
every error is our JSON shape and is logged with the request's context, and
a request without the bearer token changes nothing in Redis.
"""

from __future__ import annotations

import json
import re
import socket
import string
import uuid
from urllib.parse import quote

import fakeredis
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from werkzeug.exceptions import HTTPException

from codat_authflow.company_updates import CompanyUpdates
from codat_authflow.storage.companies import CompanyStore
from codat_authflow.storage.keys import Keys
from codat_authflow.storage.subscriptions import SubscriptionStore
from state_machine import parse_codat_event
from tests.fuzz.strategies import header_text, json_values, mutated, oddities
from tests.fuzz.support import (
    API_TOKEN,
    CODAT_DOWN,
    REDIS_DOWN,
    build_app,
    check_error_shape,
    check_logged,
    check_status,
    offline_getaddrinfo,
)
from tests.support.lifecycles import build

pytestmark = pytest.mark.resilience

FUZZ = settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
    print_blob=True,
)
OPEN_PATHS = ("/healthz", "/readyz", "/link/callback")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
FIELDS = [
    *("url", "eventTypes", "description", "enabled", "name", "tags", "platformKey"),
    *("sourceType", "subscriptionId", "companyId", "from", "to", "limit", "connectionId"),
    *("statusCode", "errorMessage"),
]


def _url_map():
    app, _ = build_app(fakeredis.FakeRedis(), ALLOW_PRIVATE_SUBSCRIBER_URLS="1")
    return app.url_map


URL_MAP = _url_map()
ROUTES = sorted(
    (rule.rule, method)
    for rule in URL_MAP.iter_rules()
    if rule.rule.startswith("/api/") or rule.rule in OPEN_PATHS
    for method in rule.methods - {"HEAD", "OPTIONS"}
)


def endpoint_of(path: str, method: str) -> str | None:
    try:
        endpoint, _ = URL_MAP.bind("localhost").match(path, method)
    except HTTPException:
        return None
    return endpoint


def allowed_5xx(path: str, method: str, redis_down: bool = False) -> set:
    """A dependency is unavailable: Redis (when it is down), Codat (on the
    journey's endpoints, which call it)."""
    allowed = set(REDIS_DOWN) if redis_down else set()
    if redis_down and path == "/readyz":
        allowed.add((503, "not_ready"))  # the readiness probe saying so
    if (endpoint_of(path, method) or "").startswith("api.journey."):
        allowed |= CODAT_DOWN
    return allowed


@pytest.fixture(scope="module")
def api(request):
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(socket, "getaddrinfo", offline_getaddrinfo())
    request.addfinalizer(monkeypatch.undo)
    redis = fakeredis.FakeRedis()
    app, logs = build_app(redis, ALLOW_PRIVATE_SUBSCRIBER_URLS="1")
    keys = Keys("authflow")
    life, _ = build("happy_path")
    events = [parse_codat_event(body) for body in life.events]
    CompanyUpdates(CompanyStore(redis, keys)).apply({life.company_id: events})
    subscription = SubscriptionStore(redis, keys).create("http://127.0.0.1:9/hook", ["*"], "fuzz")
    known = {
        "company_id": life.company_id,
        "connection_id": events[1].connection.id,
        "subscription_id": subscription.id,
        "platform_key": "gbol",
    }
    return app.test_client(), redis, logs, known


def snapshot(redis) -> dict:
    """Everything in Redis but the metrics counters (which count every
    request, authenticated or not)."""
    state = {}
    for key in redis.keys("*"):
        if b":metrics:" in key:
            continue
        kind = redis.type(key)
        if kind == b"string":
            value = redis.get(key)
        elif kind == b"hash":
            value = redis.hgetall(key)
        elif kind == b"zset":
            value = redis.zrange(key, 0, -1, withscores=True)
        elif kind == b"list":
            value = redis.lrange(key, 0, -1)
        elif kind == b"set":
            value = redis.smembers(key)
        else:
            value = redis.xlen(key) if kind == b"stream" else kind
        state[key] = value
    return state


# A valid body for each endpoint that takes one; the fuzz mutates them.
TEMPLATES = {
    ("/api/subscriptions", "POST"): {
        "url": "http://127.0.0.1:9/hook",
        "eventTypes": ["company.ready", "company.state_changed"],
        "description": "fuzz",
    },
    ("/api/subscriptions/<subscription_id>", "PATCH"): {
        "url": "http://127.0.0.1:9/other",
        "eventTypes": ["*"],
        "enabled": False,
    },
    ("/api/deliveries/replay", "POST"): {
        "subscriptionId": "sub_" + "0" * 32,
        "from": "2026-01-01T00:00:00Z",
        "to": "2026-12-31T00:00:00Z",
    },
    ("/api/companies", "POST"): {"name": "Fuzz Ltd", "description": "d", "tags": {"a": "b"}},
    ("/api/companies/<company_id>/connections", "POST"): {"platformKey": "gbol"},
}


def path_value(draw, name: str, known: dict) -> str:
    choice = draw(st.sampled_from(["known", "uuid", "text", "odd", "long"]))
    if choice == "known" and name in known:
        return known[name]
    if choice == "uuid":
        prefix = "sub_" if name == "subscription_id" else ""
        value = uuid.uuid4().hex if prefix else str(uuid.uuid4())
        return prefix + value
    if choice == "long":
        return "a" * draw(st.sampled_from([101, 1000, 5000]))
    if choice == "odd":
        return draw(st.sampled_from(["..", ".", "%00", "%2F", "sub_", "-", " ", "é", "\u202e"]))
    return draw(st.text(min_size=1, max_size=30))


@st.composite
def api_requests(draw, known: dict):
    rule, method = draw(st.sampled_from(ROUTES))
    if draw(st.integers(0, 9)) == 0:
        method = draw(st.sampled_from(METHODS))
    path = rule
    for name in re.findall(r"<(?:[a-z]+:)?([a-z_]+)>", rule):
        value = path_value(draw, name, known)
        path = re.sub(rf"<(?:[a-z]+:)?{name}>", quote(value, safe=""), path, count=1)
    auth = draw(
        st.sampled_from(
            [
                *[f"Bearer {API_TOKEN}"] * 12,
                f"bearer  {API_TOKEN} ",
                f"Bearer {API_TOKEN}x",
                "Bearer ",
                "Basic Zm9vOmJhcg==",
                "Bearer " + "x" * 9000,
                None,
            ]
        )
    )
    headers = {} if auth is None else {"Authorization": auth}
    kinds = ["none", "fields", "fields", "json", "deep", "huge_number", "big", "bytes"]
    template = TEMPLATES.get((rule, method))
    body_kind = draw(st.sampled_from(kinds + ["template"] * 6 if template else kinds))
    body: bytes | None = None
    if body_kind == "template":
        body = json.dumps(draw(mutated(template))).encode()
    elif body_kind == "fields":
        names = draw(st.lists(st.sampled_from(FIELDS), max_size=5, unique=True))
        value = {
            name: draw(
                st.one_of(
                    json_values,
                    oddities,
                    st.sampled_from(
                        [
                            "http://127.0.0.1:9/hook",
                            "https://example.com/hook",
                            "http://localhost/x",
                            "ftp://x",
                            "http://[::1/",
                            "http://user:pw@127.0.0.1/",
                            ["*"],
                            ["company.ready", "nope"],
                            "2026-01-01T00:00:00Z",
                            "Accounting",
                            "gbol",
                        ]
                    ),
                )
            )
            for name in names
        }
        body = json.dumps(value).encode()
    elif body_kind == "json":
        body = json.dumps(draw(json_values)).encode()
    elif body_kind == "deep":
        depth = draw(st.sampled_from([100, 3000, 100_000]))
        body = b'{"name":' * depth + b"1" + b"}" * depth
    elif body_kind == "huge_number":
        body = b'{"name": "x", "limit": ' + b"9" * draw(st.sampled_from([30, 5000])) + b"}"
    elif body_kind == "big":
        body = b'{"name": "' + b"x" * draw(st.sampled_from([70_000, 2_000_000])) + b'"}'
    elif body_kind == "bytes":
        body = draw(st.binary(max_size=200))
    if body is not None:
        content_type = draw(
            st.sampled_from(
                [*["application/json"] * 8, "application/json; charset=latin-1", "text/plain", None]
            )
        )
        if content_type:
            headers["Content-Type"] = content_type
    query = draw(
        st.dictionaries(
            st.sampled_from(
                [
                    *("limit", "sourceType", "enabled", "from", "to", "x", "statusCode"),
                    *("statusText", "errorMessage", "companyId", "connectionId", "platform"),
                ]
            ),
            st.one_of(header_text, st.sampled_from(["0", "-1", "1001", "10" * 40, "true"])),
            max_size=3,
        )
    )
    for _ in range(draw(st.integers(0, 1))):
        name = draw(st.text(alphabet=string.ascii_letters + "-", min_size=1, max_size=20))
        headers.setdefault(name, draw(header_text))
    return rule, method, path, query, headers, body


@FUZZ
@given(data=st.data())
def test_every_api_endpoint_answers_without_5xx_and_logs_its_errors(api, data):
    client, redis, logs, known = api
    rule, method, path, query, headers, body = data.draw(api_requests(known))
    authenticated = headers.get("Authorization", "").split() == ["Bearer", API_TOKEN] or (
        headers.get("Authorization", "").lower().split() == ["bearer", API_TOKEN.lower()]
    )
    before = snapshot(redis) if rule.startswith("/api/") else None
    with logs.collect() as lines:
        response = client.open(path, method=method, headers=headers, data=body, query_string=query)
    status = response.status_code
    event(f"{rule} {method} -> {status}")

    # /link/callback answers a person's browser with an HTML page.
    error = check_error_shape(status, response.data) if rule != "/link/callback" else None
    check_status(status, error, allowed_5xx(response.request.path, method))
    if status >= 500 and not error:
        raise AssertionError(f"{status} on {method} {path}: {response.data[:300]!r}")
    check_logged(lines, method, response.request.path, status)
    public = rule == "/api/docs" or rule.startswith("/api/docs/assets/")  # no data, no writes
    if before is not None and not authenticated and not public:
        # 401, or answered by routing before any view: 404, 405, 308 (merged slashes)
        assert status in (401, 404, 405, 308), (status, error)
        assert snapshot(redis) == before, f"{method} {path} without the token changed Redis"


@settings(FUZZ, max_examples=150)
@given(data=st.data())
def test_with_redis_down_the_api_answers_503_not_500(data):
    server = fakeredis.FakeServer()
    server.connected = False
    app, logs = build_app(fakeredis.FakeRedis(server=server), ALLOW_PRIVATE_SUBSCRIBER_URLS="1")
    known = {"company_id": str(uuid.uuid4()), "subscription_id": "sub_" + "0" * 32}
    rule, method, path, query, headers, body = data.draw(api_requests(known))
    with logs.collect() as lines:
        response = app.test_client().open(
            path, method=method, headers=headers, data=body, query_string=query
        )
    status = response.status_code
    error = check_error_shape(status, response.data) if rule != "/link/callback" else None
    check_status(status, error, allowed_5xx(response.request.path, method, redis_down=True))
    if status >= 500 and not error:
        raise AssertionError(f"{status} on {method} {path}: {response.data[:300]!r}")
    check_logged(lines, method, response.request.path, status)
