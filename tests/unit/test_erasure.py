"""Erasure: DELETE /api/companies/<id> and `companies erase`. Codat deletes
the company; subscribers get `company.revoked` (companyDeleted) before our
data goes; a tombstone keeps late webhooks from bringing the company back.

`StubCodat` stands in for our adapter (`CodatClient`); the HTTP call
(delete-company) is contract-tested against Prism."""

from __future__ import annotations

import json
import uuid

import fakeredis
import pytest
import structlog.testing

from app import create_app
from codat_authflow.bootstrap import Services
from codat_authflow.journey import companies
from codat_authflow.journey.codat import CodatNotFound, CodatRejected
from codat_authflow.journey.link_callback import record_outcome
from codat_authflow.journey.service import Journey
from codat_authflow.storage.reconciliation import TRACKED_STATES, index_key
from state_machine import parse_codat_event
from tests.support.lifecycles import Connection, Lifecycle, build
from tests.support.signing import encode_body
from workers.jobs import drain

ENV = {
    "REDIS_URL": "redis://unused",
    "API_TOKEN": "t",
    "CODAT_WEBHOOK_SECRETS": "whsec_dGVzdC1zZWNyZXQ=",
    "CODAT_API_KEY": "key",
}
AUTH = {"Authorization": "Bearer t"}


@pytest.fixture(autouse=True)
def _drain_logs(monkeypatch):
    """The drain logs to a capturing logger here: used after create_app, its
    module logger would be cached with the app's configuration, and
    tests/unit/test_drain.py could no longer capture it."""
    import workers.jobs

    monkeypatch.setattr(workers.jobs, "log", structlog.testing.CapturingLogger())


class StubCodat:
    def __init__(self):
        self.deleted: list[str] = []
        self.fail: Exception | None = None
        self.created: list[dict] = []

    def delete_company(self, company_id):
        if self.fail is not None:
            raise self.fail
        self.deleted.append(company_id)

    def find_companies_tagged(self, tag, value):
        return []

    def create_company(self, name, description=None, tags=None):
        company = {"id": str(uuid.uuid4()), "name": name, "created": "2026-01-01T00:00:00Z"}
        self.created.append(company)
        return company


@pytest.fixture
def redis():
    return fakeredis.FakeRedis()


@pytest.fixture
def codat():
    return StubCodat()


@pytest.fixture
def app(redis, codat):
    app = create_app(ENV, redis=redis)
    services = app.extensions["authflow"]
    app.extensions["journey"] = Journey.build(
        services.settings, services.redis, services.store, codat=codat
    )
    return app


def journey_of(app) -> Journey:
    return app.extensions["journey"]


def ingest(app, bodies) -> None:
    journey_of(app).updates.apply(
        {bodies[0]["payload"].get("referenceCompany", bodies[0]["payload"])["id"]: [
            parse_codat_event(b) for b in bodies
        ]}
    )  # fmt: skip


def outbox(app) -> list[dict]:
    journey = journey_of(app)
    entries = journey.redis.xrange(journey.keys.outbox)
    return [json.loads(fields[b"envelope"]) for _id, fields in entries]


def our_keys(redis, company_id: str) -> list[bytes]:
    """Keys that still name the company (the tombstone hash names it in a field)."""
    return [k for k in redis.keys("*") if company_id.encode() in k]


def test_erasure_deletes_at_codat_notifies_then_removes_our_data(app, codat, redis):
    life, _ = build("happy_path")
    ingest(app, life.events)
    company_id = life.company_id
    journey = journey_of(app)
    record_outcome(journey, company_id, "x", {"outcome": "connected", "at": "2026-01-01T00:00:00Z"})
    assert journey.store.state_counts()["ready"] == 1

    response = app.test_client().delete(f"/api/companies/{company_id}", headers=AUTH)
    assert response.status_code == 200, response.json
    assert response.json["deletedAtCodat"] is True and response.json["alreadyErased"] is False
    assert "company.revoked" in response.json["notified"]
    assert codat.deleted == [company_id]

    revoked = [e for e in outbox(app) if e["type"] == "company.revoked"]
    assert revoked[-1]["data"]["companyDeleted"] is True
    assert revoked[-1]["data"]["companyId"] == company_id

    assert journey.store.get(company_id) is None
    assert our_keys(redis, company_id) == []
    assert journey.store.state_counts().get("ready", 0) == 0
    assert all(redis.zscore(index_key(journey.keys, s), company_id) is None for s in TRACKED_STATES)
    assert redis.zscore(journey.keys.funnel_first_seen, company_id) is None
    assert redis.hexists(journey.keys.tombstones, company_id)
    gone = app.test_client().get(f"/api/companies/{company_id}", headers=AUTH)
    assert gone.status_code == 404


def test_late_webhooks_for_an_erased_company_are_acknowledged_and_ignored(app, redis):
    life, _ = build("happy_path")
    ingest(app, life.events)
    assert app.test_client().delete(f"/api/companies/{life.company_id}", headers=AUTH).json
    ctx = Services.build(app.extensions["authflow"].settings, redis)
    ctx.inbox.ensure_group()
    late = Lifecycle(company_id=life.company_id)
    bodies = [
        late.company("company.created"),
        late.connection("connection.connected", Connection(str(uuid.uuid4()))),
    ]
    for n, body in enumerate(bodies):
        ctx.inbox.accept(f"msg_late_{n}", encode_body(body), 0)
    totals = drain(ctx)
    assert totals["ignored"] == 2 and totals["applied"] == 0 and totals["failed"] == 0
    assert ctx.inbox.backlog() == 0
    assert ctx.store.get(life.company_id) is None, "never recreated"


def test_erasing_again_answers_the_tombstone(app, codat):
    life, _ = build("happy_path")
    ingest(app, life.events)
    client = app.test_client()
    first = client.delete(f"/api/companies/{life.company_id}", headers=AUTH).json
    again = client.delete(f"/api/companies/{life.company_id}", headers=AUTH)
    assert again.status_code == 200
    assert again.json["alreadyErased"] is True and again.json["erasedAt"] == first["erasedAt"]
    assert codat.deleted == [life.company_id]


def test_a_company_already_revoked_still_gets_company_revoked_with_company_deleted(app):
    life, _ = build("company_deleted")  # revoked by Codat's company.deleted
    ingest(app, life.events)
    before = [e for e in outbox(app) if e["type"] == "company.revoked"]
    response = app.test_client().delete(f"/api/companies/{life.company_id}", headers=AUTH)
    assert response.status_code == 200
    after = [e for e in outbox(app) if e["type"] == "company.revoked"]
    assert len(after) == len(before) + 1
    assert after[-1]["data"]["companyDeleted"] is True and after[-1]["data"]["erased"] is True


def test_when_codat_refuses_nothing_is_erased(app, codat):
    life, _ = build("happy_path")
    ingest(app, life.events)
    codat.fail = CodatRejected("boom", operation="delete-company", codat_status=500)
    response = app.test_client().delete(f"/api/companies/{life.company_id}", headers=AUTH)
    assert response.status_code == 502
    journey = journey_of(app)
    assert journey.store.get(life.company_id).state.value == "ready"
    assert not journey.redis.hexists(journey.keys.tombstones, life.company_id)
    assert not [e for e in outbox(app) if e["type"] == "company.revoked"]


def test_a_company_codat_no_longer_has_is_erased_here(app, codat):
    life, _ = build("happy_path")
    ingest(app, life.events)
    codat.fail = CodatNotFound("gone", operation="delete-company", codat_status=404)
    response = app.test_client().delete(f"/api/companies/{life.company_id}", headers=AUTH)
    assert response.status_code == 200 and response.json["deletedAtCodat"] is False
    assert journey_of(app).store.get(life.company_id) is None


def test_unknown_and_malformed_ids(app, codat):
    client = app.test_client()
    unknown = client.delete(f"/api/companies/{uuid.uuid4()}", headers=AUTH)
    assert unknown.status_code == 404 and unknown.json["error"]["code"] == "company_not_found"
    assert client.delete("/api/companies/nope", headers=AUTH).status_code == 400
    assert codat.deleted == []


def test_a_customer_id_gets_a_new_company_after_erasure(app, codat, redis):
    journey = journey_of(app)
    first = companies.create_customer_company(journey, "cust_123/x", None, None, None)
    company_id = first.record.facts.company_id
    assert app.test_client().delete(f"/api/companies/{company_id}", headers=AUTH).status_code == 200
    assert redis.get(journey.keys.company_by_customer("cust_123/x")) is None
    second = companies.create_customer_company(journey, "cust_123/x", None, None, None)
    assert second.created and second.record.facts.company_id != company_id


def test_a_marker_left_pointing_at_an_erased_company_is_replaced(app, codat, redis):
    journey = journey_of(app)
    first = companies.create_customer_company(journey, "c-9", None, None, None)
    company_id = first.record.facts.company_id
    app.test_client().delete(f"/api/companies/{company_id}", headers=AUTH)
    redis.set(journey.keys.company_by_customer("c-9"), company_id)  # e.g. a race
    second = companies.create_customer_company(journey, "c-9", None, None, None)
    assert second.created and second.record.facts.company_id != company_id


def test_the_cli_twin(app, codat):
    life, _ = build("happy_path")
    ingest(app, life.events)
    runner = app.test_cli_runner()
    refused = runner.invoke(args=["companies", "erase", life.company_id], input="n\n")
    assert refused.exit_code == 1 and codat.deleted == []
    result = runner.invoke(args=["companies", "erase", life.company_id, "--yes"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["status"] == "erased" and codat.deleted == [life.company_id]

    other, _ = build("happy_path")
    ingest(app, other.events)
    local = runner.invoke(args=["companies", "erase", other.company_id, "--yes", "--local-only"])
    assert local.exit_code == 0 and json.loads(local.output)["deletedAtCodat"] is False
    assert codat.deleted == [life.company_id]

    codat.fail = CodatRejected("boom", operation="delete-company", codat_status=500)
    third, _ = build("happy_path")
    ingest(app, third.events)
    failed = runner.invoke(args=["companies", "erase", third.company_id, "--yes"])
    assert failed.exit_code == 2 and "boom" in failed.output
