"""Codat's rate limit and plan limits, end to end on our side of the wire.

A 429 from Codat answers our caller 503 with Codat's `Retry-After`;
reconciliation stops its batch at the first 429 and does nothing until
`Retry-After` has passed; `client.rateLimit.reached` pauses it until its
`expiryDate` and `client.rateLimit.reset` resumes it, each counted and logged;
a 402 answers 402 with Codat's message. Codat is reached through our real
client (`CodatClient` and the SDK) on a scripted httpx transport, so the
status codes and headers are exactly what the SDK hands us.
"""

from __future__ import annotations

import copy
import time
import uuid
from datetime import UTC, datetime

import fakeredis
import httpx
import pytest
import structlog.testing

from app import create_app
from codat_authflow.bootstrap import Services
from codat_authflow.journey import rate_limit, reconcile
from codat_authflow.journey.codat import build_http_client
from codat_authflow.journey.codat.errors import retry_after_seconds
from codat_authflow.journey.reconcile import reconcile_due
from codat_authflow.journey.service import Journey
from codat_authflow.observability.metrics import read_counters
from codat_authflow.settings import Settings
from codat_authflow.storage.companies import CompanyStore
from codat_authflow.storage.keys import Keys
from state_machine import CompanyState, parse_codat_event
from tests.support.lifecycles import Connection, Lifecycle, spec_example
from tests.support.signing import encode_body
from workers.jobs import drain

ENV = {
    "REDIS_URL": "redis://unused",
    "API_TOKEN": "s3cret-token",
    "CODAT_WEBHOOK_SECRETS": "whsec_dGVzdC1zZWNyZXQ=",
    "CODAT_API_KEY": "test-key",
    "CODAT_BASE_URL": "http://codat.test",
}
AUTH = {"Authorization": "Bearer s3cret-token"}
DAY = 24 * 3600
RATE_LIMITED = {
    "statusCode": 429,
    "service": "PublicApi",
    "error": "You have made too many requests in a given amount of time; please retry later.",
    "correlationId": "bc997528a9d7abb9161ef45f05d38599",
}
PLAN_LIMIT = {
    "statusCode": 402,
    "service": "PublicApi",
    "error": "You have exceeded the 50-company limit that applies to a Free plan.",
    "correlationId": "c1997528a9d7abb9161ef45f05d38599",
}


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ScriptedCodat:
    """An httpx transport: 429 (with `Retry-After`) while `limited`, else
    an empty page of connections (and 404 for one connection); every
    request is recorded."""

    def __init__(self, retry_after: str | None = "120"):
        self.limited = True
        self.retry_after = retry_after
        self.status = 429
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.limited:
            body = RATE_LIMITED if self.status == 429 else PLAN_LIMIT
            headers = {"Retry-After": self.retry_after} if self.retry_after else {}
            return httpx.Response(self.status, json=body, headers=headers)
        if not request.url.path.endswith("/connections"):  # get-connection: gone
            return httpx.Response(404, json={**RATE_LIMITED, "statusCode": 404, "error": "gone"})
        links = {"self": {"href": "/"}, "current": {"href": "/"}}
        page = {"results": [], "pageNumber": 1, "pageSize": 200, "totalResults": 0}
        return httpx.Response(200, json={**page, "_links": links})

    def http_client(self) -> httpx.Client:
        return build_http_client(connect_timeout=1, timeout=1, transport=httpx.MockTransport(self))


def capture(monkeypatch, module) -> list[dict]:
    """The log lines `module` writes (its module-level `log`), whatever
    structlog's configuration and cache (create_app caches loggers)."""
    logger = structlog.testing.CapturingLogger()
    monkeypatch.setattr(module, "log", logger)
    lines: list[dict] = []

    class View(list):
        def __iter__(self):
            return iter([{"event": c.args[0], **c.kwargs} for c in logger.calls])

    return View(lines)


@pytest.fixture(autouse=True)
def _drain_logs(monkeypatch):
    """The drain logs to a capturing logger here: used after create_app, its
    module logger would be cached with the app's configuration, and
    tests/unit/test_drain.py could no longer capture it."""
    import workers.jobs

    monkeypatch.setattr(workers.jobs, "log", structlog.testing.CapturingLogger())


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock(time.time())


@pytest.fixture
def codat():
    return ScriptedCodat()


@pytest.fixture
def journey(codat, clock):
    redis = fakeredis.FakeRedis()
    settings = Settings.from_env(ENV)
    store = CompanyStore(redis, Keys(settings.key_prefix))
    return Journey.build(settings, redis, store, http_client=codat.http_client(), clock=clock)


def in_linking(journey: Journey, start: float) -> str:
    life = Lifecycle()
    body = life.connection("connection.created", Connection(str(uuid.uuid4())))
    stamp = iso(start).replace("Z", ".000000Z")
    journey.updates.apply({life.company_id: [parse_codat_event(body)]}, now=lambda: stamp)
    return life.company_id


# -- a 429 to the host application's call ---------------------------------------------


def app_on(codat: ScriptedCodat, redis=None):
    app = create_app(ENV, redis=redis or fakeredis.FakeRedis())
    services = app.extensions["authflow"]
    app.extensions["journey"] = Journey.build(
        services.settings, services.redis, services.store, http_client=codat.http_client()
    )
    return app


def test_a_429_answers_503_with_codats_retry_after_and_pauses_reconciliation(codat):
    app = app_on(codat)
    response = app.test_client().get("/api/integrations", headers=AUTH)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "120"
    error = response.get_json()["error"]
    assert error["code"] == "codat_rate_limited"
    assert error["details"]["codatStatus"] == 429
    assert error["details"]["correlationId"] == RATE_LIMITED["correlationId"]
    assert len(codat.requests) == 1, "no retry inside the SDK"
    journey = app.extensions["journey"]
    pause = rate_limit.current_pause(journey.redis, journey.keys)
    assert pause is not None and pause.reason == "retry_after"
    assert 115 < pause.until - time.time() <= 121
    counts = read_counters(journey.redis, journey.keys.prefix)["authflow_codat_rate_limit"]
    assert counts[("http_429",)] == 1


def test_a_429_without_retry_after_still_says_when_to_retry():
    codat = ScriptedCodat(retry_after=None)
    response = app_on(codat).test_client().get("/api/integrations", headers=AUTH)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "60"


def test_a_402_answers_402_with_codats_message(codat):
    codat.status = 402
    response = app_on(codat).test_client().get("/api/integrations", headers=AUTH)
    assert response.status_code == 402
    error = response.get_json()["error"]
    assert error["code"] == "codat_plan_limit"
    assert PLAN_LIMIT["error"] in error["message"]
    assert error["details"]["codatMessage"] == PLAN_LIMIT["error"]
    assert "Retry-After" not in response.headers


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120),
        ("0", 1),
        ("2.5", 3),
        ("", 60),
        (None, 60),
        ("soon", 60),
        ("999999999", 24 * 3600),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 1),  # a date in the past
    ],
)
def test_retry_after_is_read_as_seconds_or_a_date(value, seconds):
    assert retry_after_seconds(value) == seconds


def test_retry_after_as_an_http_date():
    now = 1_790_000_000.0
    moment = datetime.fromtimestamp(now + 90, UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert retry_after_seconds(moment, now) == 90


# -- reconciliation ------------------------------------------------------------------


def test_reconciliation_stops_at_the_first_429_and_resumes_after_retry_after(
    journey, codat, clock, monkeypatch
):
    first = in_linking(journey, clock.now - 2 * DAY)
    second = in_linking(journey, clock.now - 2 * DAY + 1)
    started = {c: journey.index.started(c, CompanyState.LINKING) for c in (first, second)}

    logs = capture(monkeypatch, reconcile)
    totals = reconcile_due(journey)
    assert totals["rateLimited"] == {"retryAfterSeconds": 120}
    assert totals["checked"] == 0 and totals["failed"] == 0
    assert len(codat.requests) == 1, "the batch stops at the first 429"
    assert {c: journey.index.started(c, CompanyState.LINKING) for c in started} == started, (
        "both companies stay due, first in line after the pause"
    )
    assert any(e["event"] == "reconcile.rate_limited" for e in logs)
    pause = rate_limit.current_pause(journey.redis, journey.keys, clock.now)
    assert pause.reason == "retry_after" and pause.until == clock.now + 120

    clock.now += 119
    codat.limited = False
    assert reconcile_due(journey)["paused"]["reason"] == "retry_after"
    assert len(codat.requests) == 1, "no call while Retry-After runs"

    clock.now += 2
    totals = reconcile_due(journey)
    assert "paused" not in totals and totals["checked"] == 2
    assert len(codat.requests) > 1
    actions = read_counters(journey.redis, journey.keys.prefix)["authflow_reconciliation_actions"]
    assert actions[("rate_limited",)] == 1 and actions[("paused",)] == 1


# -- client.rateLimit.reached / reset webhooks --------------------------------------------


@pytest.fixture
def ctx():
    context = Services.build(Settings.from_env(ENV), fakeredis.FakeRedis())
    context.inbox.ensure_group()
    return context


def rate_limit_event(kind: str, generated: float, expiry: float | str | None, n: int = 0):
    body = spec_example(f"client.rateLimit.{kind}")
    body["id"] = f"743ec94a-8aa4-44bb-8bd4-{n:012d}"
    body["generatedDate"] = iso(generated)
    if expiry is None:
        del body["payload"]["expiryDate"]
    else:
        body["payload"]["expiryDate"] = expiry if isinstance(expiry, str) else iso(expiry)
    return body


def deliver(ctx, *bodies):
    for body in bodies:
        ctx.inbox.accept(f"msg_{body['id']}", encode_body(copy.deepcopy(body)), 0)
    return drain(ctx)


def test_rate_limit_webhooks_pause_and_resume_reconciliation(ctx, monkeypatch):
    now = time.time()
    expiry = int(now) + 3 * 3600
    logs = capture(monkeypatch, rate_limit)
    totals = deliver(ctx, rate_limit_event("reached", now - 5, expiry, 1))
    assert totals["ignored"] == 1 and totals["rejected"] == 0
    assert ctx.inbox.backlog() == 0, "acknowledged"
    assert ctx.redis.xlen(ctx.inbox.keys.ignored_events) == 1, "stored"
    pause = rate_limit.current_pause(ctx.redis, ctx.inbox.keys)
    assert pause.reason == "rate_limit_reached" and pause.until == expiry
    assert pause.details["dailyQuota"] == 12000 and pause.details["quotaRemaining"] == 0
    (line,) = [e for e in logs if e["event"] == "codat.rate_limit.reached"]
    assert line["expiryDate"] == iso(expiry) and line["webhook_id"].startswith("msg_")

    codat = ScriptedCodat()
    codat.limited = False
    journey = Journey.build(
        ctx.settings, ctx.redis, ctx.store, http_client=codat.http_client(), clock=lambda: now
    )
    in_linking(journey, now - 2 * DAY)
    totals = reconcile_due(journey)
    assert totals["paused"]["reason"] == "rate_limit_reached"
    assert totals["paused"]["details"]["expiryDate"] == iso(expiry)
    assert codat.requests == []

    deliver(ctx, rate_limit_event("reset", now, expiry + DAY, 2))
    assert rate_limit.current_pause(ctx.redis, ctx.inbox.keys) is None
    assert any(e["event"] == "codat.rate_limit.reset" for e in logs)
    assert reconcile_due(journey)["checked"] == 1 and codat.requests

    counts = read_counters(ctx.redis, ctx.store.keys.prefix)["authflow_codat_rate_limit"]
    assert counts[("reached",)] == 1 and counts[("reset",)] == 1
    assert ctx.redis.hgetall(ctx.inbox.keys.ignored_counts) == {
        b"client.rateLimit.reached": b"1",
        b"client.rateLimit.reset": b"1",
    }


def test_a_reached_older_than_the_latest_reset_pauses_nothing(ctx):
    now = time.time()
    reset = rate_limit_event("reset", now - 60, now + DAY, 1)
    stale = rate_limit_event("reached", now - 3600, now + 600, 2)
    deliver(ctx, reset)
    deliver(ctx, stale)
    assert rate_limit.current_pause(ctx.redis, ctx.inbox.keys) is None


def test_a_reset_older_than_the_pause_does_not_lift_it(ctx):
    now = time.time()
    deliver(ctx, rate_limit_event("reached", now - 60, now + 600, 1))
    deliver(ctx, rate_limit_event("reset", now - 3600, now, 2))
    assert rate_limit.current_pause(ctx.redis, ctx.inbox.keys) is not None


@pytest.mark.parametrize("expiry", [None, "2024-09-01T23:59:99Z", "not a date", 42])
def test_a_reached_without_a_usable_expiry_pauses_an_hour(ctx, expiry):
    now = time.time()
    body = rate_limit_event("reached", now, None if expiry is None else "x", 1)
    if expiry is not None:
        body["payload"]["expiryDate"] = expiry
    deliver(ctx, body)
    pause = rate_limit.current_pause(ctx.redis, ctx.inbox.keys)
    assert pause is not None
    assert now + 3590 < pause.until <= time.time() + 3600


def test_a_reached_with_a_past_expiry_or_an_odd_payload_is_acknowledged(ctx):
    odd = rate_limit_event("reached", time.time(), None, 1)
    odd["payload"] = {"dailyQuota": "many", "quotaRemaining": None, "extra": [1]}
    totals = deliver(ctx, spec_example("client.rateLimit.reached"), odd)  # example: 2024
    assert totals["ignored"] == 2 and totals["rejected"] == 0
    assert ctx.inbox.backlog() == 0
    pause = rate_limit.current_pause(ctx.redis, ctx.inbox.keys)
    assert pause is not None and pause.details["dailyQuota"] is None
