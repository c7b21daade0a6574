"""The ops web surface with the Flask test client on a fake Redis: auth for
/ops and /metrics, the mounted RQ dashboard, the funnel API and page, the
webhook outcome counters, and the per-request log line."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import fakeredis
import pytest
from prometheus_client.parser import text_string_to_metric_families
from rq import Queue, Worker
from rq.job import Job

from app import create_app
from codat_authflow.company_updates import CompanyUpdates
from codat_authflow.observability import metrics
from state_machine import parse_codat_event
from tests.support.lifecycles import Lifecycle, build, new_connection
from tests.support.signing import encode_body, signed_headers
from workers.worker import AuthflowWorker

SECRET = "whsec_" + "dGVzdC1zZWNyZXQtZm9yLXVuaXQtdGVzdHMtMDAwMDAw"
ENV = {
    "REDIS_URL": "redis://:hunter2@redis.internal:6380/0",
    "API_TOKEN": "api-token",
    "CODAT_WEBHOOK_SECRETS": SECRET,
}


def basic(password: str, user: str = "ops") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


OPS = basic("api-token")


@pytest.fixture(autouse=True)
def no_pending():
    metrics._pending.clear()


@pytest.fixture
def server():
    return fakeredis.FakeServer()


@pytest.fixture
def redis(server):
    return fakeredis.FakeRedis(server=server)


@pytest.fixture
def app(redis):
    return create_app(ENV, redis=redis)


@pytest.fixture
def client(app):
    return app.test_client()


def scrape(client, headers=OPS) -> dict[str, dict[tuple, float]]:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


# -- authentication ----------------------------------------------------------------

PROTECTED = [
    "/ops/",
    "/ops/funnel",
    "/ops/rq/",
    "/ops/rq/0/view/workers",
    "/ops/rq/0/data/queues.json",
    "/ops/rq/static/js/jquery-3.5.1.min.js",
    "/metrics",
]


@pytest.mark.parametrize("path", PROTECTED)
def test_ops_pages_need_the_token(client, path):
    for headers in ({}, basic("wrong"), bearer("wrong"), basic(""), {"Authorization": "Basic !!"}):
        response = client.get(path, headers=headers)
        assert response.status_code == 401, (path, headers)
        assert response.headers["WWW-Authenticate"].startswith('Basic realm="codat-authflow ops"')
    assert client.get(path, headers=basic("api-token", user="anyone")).status_code == 200
    assert client.get(path, headers=bearer("api-token")).status_code == 200


def test_api_funnel_needs_the_api_bearer_token(client):
    assert client.get("/api/funnel").status_code == 401
    assert client.get("/api/funnel", headers=basic("api-token")).status_code == 401
    assert client.get("/api/funnel", headers=bearer("api-token")).status_code == 200


def test_a_separate_ops_token_splits_the_roles(redis):
    client = create_app({**ENV, "OPS_TOKEN": "ops-secret"}, redis=redis).test_client()
    assert client.get("/ops/funnel", headers=basic("api-token")).status_code == 401
    assert client.get("/ops/funnel", headers=basic("ops-secret")).status_code == 200
    assert client.get("/metrics", headers=bearer("ops-secret")).status_code == 200
    assert client.get("/api/funnel", headers=bearer("ops-secret")).status_code == 401
    assert client.get("/api/funnel", headers=bearer("api-token")).status_code == 200


def test_metrics_can_be_public_while_ops_stays_protected(redis):
    client = create_app({**ENV, "METRICS_PUBLIC": "1"}, redis=redis).test_client()
    assert client.get("/metrics").status_code == 200
    assert client.get("/ops/rq/").status_code == 401


# -- the RQ dashboard ----------------------------------------------------------------


def boom() -> None:
    raise RuntimeError("boom")


def failed_job(redis, queue_name="authflow") -> Job:
    """A job that really failed, run by our worker class."""
    queue = Queue(queue_name, connection=redis)
    job = queue.enqueue(boom)
    AuthflowWorker([queue], connection=redis).work(burst=True, with_scheduler=False)
    assert job.get_status() == "failed"
    return job


def test_the_dashboard_shows_our_queues_workers_and_failed_jobs(client, redis):
    job = failed_job(redis)
    Queue("authflow-deliveries", connection=redis).enqueue("workers.notify.deliver", "dlv_1")
    worker = Worker([Queue("authflow", connection=redis)], connection=redis, name="w-1")
    worker.register_birth()

    page = client.get("/ops/rq/", headers=OPS).get_data(as_text=True)
    assert "RQ dashboard" in page
    assert "hunter2" not in page and "redis.internal:6380" in page  # no credentials shown

    queues = client.get("/ops/rq/0/data/queues.json", headers=OPS).json["queues"]
    by_name = {q["name"]: q for q in queues}
    assert by_name["authflow"]["failed_job_registry_count"] == 1
    assert by_name["authflow-deliveries"]["count"] == 1

    workers = client.get("/ops/rq/0/data/workers.json", headers=OPS).json["workers"]
    assert [w["name"] for w in workers] == ["w-1"]

    failed = client.get("/ops/rq/0/data/jobs/authflow/failed/8/asc/1.json", headers=OPS).json
    assert [j["id"] for j in failed["jobs"]] == [job.id]


def test_requeue_from_the_dashboard_puts_the_job_back(client, redis):
    job = failed_job(redis)
    url = f"/ops/rq/job/{job.id}/requeue"
    # A browser tricked by another site: credentials, but neither header.
    assert client.post(url, headers=OPS).status_code == 403
    assert client.post(url, headers={**OPS, "Origin": "https://evil.example"}).status_code == 403
    response = client.post(url, headers={**OPS, "X-Requested-With": "XMLHttpRequest"})
    assert response.status_code == 200 and response.json == {"status": "OK"}
    assert Queue("authflow", connection=redis).job_ids == [job.id]


def test_requeue_all_is_post_only_and_delete_is_off(client, redis):
    failed_job(redis)
    failed_job(redis)
    assert client.get("/ops/rq/requeue/authflow", headers=OPS).status_code == 405
    response = client.post(
        "/ops/rq/requeue/authflow", headers={**OPS, "Origin": "http://localhost"}
    )
    assert response.json == {"status": "OK", "count": 2}
    job = failed_job(redis)
    deleted = client.post(f"/ops/rq/job/{job.id}/delete", headers=bearer("api-token"))
    assert deleted.json == {"status": "DISABLED"}
    assert Job.exists(job.id, connection=redis)


# -- the funnel --------------------------------------------------------------------


def ingest(app, kind: str, at: datetime, source_type: str | None = None) -> str:
    """Apply a lifecycle's events through the real store, first seen at `at`."""
    life, _ = build(kind)
    store = app.extensions["authflow"].store
    for n, body in enumerate(life.events):
        if source_type and "connection" in body["payload"]:
            body["payload"]["connection"]["sourceType"] = source_type
        stamp = (at + timedelta(seconds=n)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        CompanyUpdates(store).apply(
            {life.company_id: [parse_codat_event(body)]}, now=lambda s=stamp: s
        )
    return life.company_id


def test_the_funnel_api_counts_companies_first_seen_in_the_period(app, client):
    now = datetime.now(UTC)
    ingest(app, "happy_path", now - timedelta(days=2))
    ingest(app, "failed_only", now - timedelta(days=1))
    ingest(app, "linked_waiting_for_sync", now - timedelta(hours=1), source_type="Commerce")
    ingest(app, "happy_path", now - timedelta(days=40))  # before the default 30 days
    data = client.get("/api/funnel", headers=bearer("api-token")).json
    assert data["companies"] == 3
    assert [s["companies"] for s in data["steps"]] == [3, 3, 2, 1]
    assert data["topConnectionFailures"][0]["count"] == 1
    assert data["currentStates"]["linking"] == 1

    since = (now - timedelta(days=41)).strftime("%Y-%m-%d")
    wider = client.get(f"/api/funnel?from={since}", headers=bearer("api-token")).json
    assert wider["companies"] == 4
    commerce = client.get("/api/funnel?sourceType=commerce", headers=bearer("api-token")).json
    assert [s["companies"] for s in commerce["steps"]] == [1, 1, 1, 0]
    assert commerce["sourceType"] == "commerce"


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("from=yesterday", "ISO 8601"),
        ("from=2026-02-01&to=2026-01-01", "before"),
        ("from=2024-01-01&to=2026-01-01", "366 days"),
        ("sourceType=" + "x" * 41, "sourceType"),
        ("sourceType=a;b", "sourceType"),
    ],
)
def test_a_bad_funnel_query_is_a_400_that_says_why(client, query, fragment):
    response = client.get(f"/api/funnel?{query}", headers=bearer("api-token"))
    assert response.status_code == 400
    assert response.json["error"]["code"] == "invalid_query"
    assert fragment in response.json["error"]["message"]
    page = client.get(f"/ops/funnel?{query}", headers=OPS)
    assert page.status_code == 400 and fragment in page.get_data(as_text=True)


def test_the_funnel_page_renders_the_numbers_and_an_svg_chart(app, client):
    now = datetime.now(UTC)
    for kind in ("happy_path", "happy_path", "failed_only", "revoked_after_ready"):
        ingest(app, kind, now - timedelta(hours=3))
    page = client.get("/ops/funnel", headers=OPS).get_data(as_text=True)
    assert '<svg id="funnel-chart"' in page
    assert 'data-step="ready" data-companies="3"' in page
    assert 'data-step="created" data-companies="4"' in page
    assert "<script" not in page and "http" not in page.replace(
        "http://www.w3.org/2000/svg", ""
    )  # works offline: no script, no external asset
    assert "1</strong> revoked" in page
    assert "75.0%" in page  # ready / created


# -- webhook outcomes and the request log line -----------------------------------------


def webhook(client, body: bytes, headers: dict[str, str]) -> int:
    with client.post("/webhooks/codat", data=body, headers=headers) as response:
        return response.status_code  # leaving the block closes it: the count is written


def test_every_webhook_outcome_is_counted(client, server):
    life = Lifecycle()
    body = encode_body(life.connection("connection.connected", new_connection()))
    ok = signed_headers(SECRET, body, webhook_id="msg_1")
    assert webhook(client, body, ok) == 202
    assert webhook(client, body, ok) == 200
    assert webhook(client, body.replace(b"Linked", b"Unlinked"), ok) == 401
    headers = dict(ok)
    headers.pop("webhook-signature")
    assert webhook(client, body, headers) == 401
    old = datetime.now(UTC) - timedelta(minutes=10)
    assert webhook(client, body, signed_headers(SECRET, body, timestamp=old)) == 401
    assert webhook(client, b"not json", signed_headers(SECRET, b"not json")) == 400
    assert webhook(client, body, {**ok, "Content-Type": "text/plain"}) == 415
    big = b'{"pad": "' + b"x" * (1024 * 1024) + b'"}'
    assert webhook(client, big, signed_headers(SECRET, big)) == 413
    server.connected = False
    fresh = encode_body(life.connection("connection.created", new_connection()))
    assert webhook(client, fresh, signed_headers(SECRET, fresh)) == 503
    server.connected = True

    counts = {
        dict(k)["outcome"]: v for k, v in scrape(client)["authflow_webhooks_received_total"].items()
    }
    assert counts == {
        "queued": 1,
        "duplicate": 1,
        "bad_signature": 2,
        "stale": 1,
        "malformed": 2,
        "too_large": 1,
        "unavailable": 1,  # kept while Redis was down, written with the next count
        "error": 0,
    }


def test_one_log_line_per_request_with_duration_and_the_ids_bound(client, logs):
    life = Lifecycle()
    body = encode_body(life.connection("connection.created", new_connection()))
    webhook(client, body, signed_headers(SECRET, body, webhook_id="msg_trace"))
    client.get(f"/api/companies/{life.company_id}", headers=bearer("api-token"))
    client.get("/ops/funnel")
    first, second, third = logs.lines("authflow.request")
    assert first["path"] == "/webhooks/codat" and first["status"] == 202
    assert first["webhook_id"] == "msg_trace" and first["company_id"] == life.company_id
    assert first["outcome"] == "queued"
    assert isinstance(first["duration_ms"], float) and first["duration_ms"] >= 0
    assert second["company_id"] == life.company_id and second["status"] == 404
    assert "webhook_id" not in second  # nothing carried over from the previous request
    assert third == {
        **third,
        "method": "GET",
        "path": "/ops/funnel",
        "status": 401,
        "endpoint": "ops.funnel_page",
    }
