"""`GET /api/companies/<id>`, the token, and the health endpoints."""

from __future__ import annotations

import fakeredis
import pytest

from app import create_app
from codat_authflow.bootstrap import Services
from codat_authflow.settings import Settings
from tests.support.lifecycles import build
from tests.support.signing import encode_body
from workers.jobs import drain

ENV = {
    "REDIS_URL": "redis://unused",
    "API_TOKEN": "s3cret-token",
    "CODAT_WEBHOOK_SECRETS": "whsec_dGVzdC1zZWNyZXQ=",
}
AUTH = {"Authorization": "Bearer s3cret-token"}


@pytest.fixture
def redis():
    return fakeredis.FakeRedis()


@pytest.fixture
def client(redis):
    return create_app(ENV, redis=redis).test_client()


def apply_lifecycle(redis, kind):
    ctx = Services.build(Settings.from_env(ENV), redis)
    ctx.inbox.ensure_group()
    life, expected = build(kind)
    for i, body in enumerate(life.events):
        ctx.inbox.accept(f"{life.company_id}-{i}", encode_body(body), 0)
    drain(ctx)
    return life, expected


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "s3cret-token"},
        {"Authorization": "Basic s3cret-token"},
        {"Authorization": "Bearer "},
    ],
)
def test_the_api_needs_the_bearer_token(client, headers):
    response = client.get("/api/companies/abc", headers=headers)
    assert response.status_code == 401
    assert response.json["error"]["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_unknown_company_is_404(client):
    response = client.get("/api/companies/0498e921-9b53-4396-a412-4f2f5983b0a2", headers=AUTH)
    assert response.status_code == 404
    assert "0498e921" in response.json["error"]["message"]


@pytest.mark.parametrize("company_id", ["x" * 101, "bad id", "%00", "-leading-dash"])
def test_malformed_company_id_is_400(client, company_id):
    response = client.get(f"/api/companies/{company_id}", headers=AUTH)
    assert response.status_code == 400
    assert response.json["error"]["code"] == "invalid_company_id"


def test_a_company_shows_state_connections_sync_errors_and_history(client, redis):
    life, _ = apply_lifecycle(redis, "failed_then_linked")
    body = client.get(f"/api/companies/{life.company_id}", headers=AUTH).json
    assert body["companyId"] == life.company_id
    assert body["name"] == "Toft stores"
    assert body["state"] == "ready"
    statuses = sorted(c["status"] for c in body["connections"])
    assert statuses == ["Linked", "PendingAuth"]
    linked = next(c for c in body["connections"] if c["status"] == "Linked")
    assert (linked["sourceType"], linked["platformKey"], linked["platformName"]) == (
        "Accounting",
        "gbol",
        "Xero",
    )
    assert body["initialSync"]["startedAt"] and body["initialSync"]["completedAt"]
    assert body["lastError"]["statusCode"] == "403"
    assert body["lastError"]["statusText"] == "User cancelled linking"
    assert [(h["from"], h["to"]) for h in body["history"]] == [
        ("created", "linking"),
        ("linking", "linked"),
        ("linked", "syncing"),
        ("syncing", "ready"),
    ]
    assert all(h["eventId"] and h["eventType"] and h["at"] for h in body["history"])


def test_each_connection_shows_what_codat_read_of_each_data_type(client, redis):
    life, _ = apply_lifecycle(redis, "happy_path")
    body = client.get(f"/api/companies/{life.company_id}", headers=AUTH).json
    (linked,) = [c for c in body["connections"] if c["status"] == "Linked"]
    views = {d["dataType"]: d for d in linked["dataTypes"]}
    assert set(views) == {"invoices", "bankAccounts"}
    invoices = views["invoices"]
    assert invoices["status"] == "Complete" and invoices["lastErrorStatus"] is None
    assert invoices["firstCompleteAt"] <= invoices["initialCompleteAt"] <= invoices["lastReadAt"]
    assert invoices["initialReadAt"] == invoices["initialCompleteAt"]
    assert body["readiness"] == {
        "readyDataTypes": [],
        "met": True,
        "connectionIds": [linked["id"]],
        "missingDataTypes": [],
        "failing": [],
    }


def test_readiness_says_which_gated_data_types_are_missing_or_failing(redis):
    env = {**ENV, "READY_DATA_TYPES": "invoices,balanceSheet"}
    gated = create_app(env, redis=redis)
    ctx = Services.build(Settings.from_env(env), redis)
    ctx.inbox.ensure_group()
    life, _ = build("initial_reads_all_failed")
    for i, body in enumerate(life.events):
        ctx.inbox.accept(f"{life.company_id}-{i}", encode_body(body), 0)
    drain(ctx)
    body = gated.test_client().get(f"/api/companies/{life.company_id}", headers=AUTH).json
    assert body["state"] == "syncing"
    readiness = body["readiness"]
    assert readiness["met"] is False and readiness["connectionIds"] == []
    assert readiness["readyDataTypes"] == ["balanceSheet", "invoices"]
    assert readiness["missingDataTypes"] == ["balanceSheet", "invoices"]
    # bills failed too, but the gate does not need it: only invoices is failing
    assert [(f["dataType"], f["status"]) for f in readiness["failing"]] == [
        ("invoices", "FetchError")
    ]
    views = {d["dataType"]: d for c in body["connections"] for d in c["dataTypes"]}
    assert views["bills"]["status"] == views["bills"]["lastErrorStatus"] == "AuthError"
    failed = views["invoices"]
    assert failed["firstCompleteAt"] is None and failed["lastErrorStatus"] == failed["status"]
    assert failed["lastErrorIssues"] and failed["lastErrorIssues"][0]["message"]


def test_health_needs_no_token(client):
    assert client.get("/healthz").json == {"status": "ok"}
    assert client.get("/readyz").json == {"status": "ready"}


def test_unknown_routes_answer_json(client):
    response = client.get("/nope")
    assert response.status_code == 404
    assert response.json["error"]["status"] == 404
    assert client.get("/webhooks/codat").status_code == 405
