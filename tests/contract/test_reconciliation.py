"""Reconciliation in-process, Codat on Prism: due companies are found through
the index, Codat's answers move them, and nothing is lost when Codat fails."""

from __future__ import annotations

import json

import pytest

from codat_authflow.journey.reconcile import reconcile_due
from codat_authflow.storage.reconciliation import index_key
from state_machine import parse_codat_event
from tests.contract.conftest import AUTH
from tests.support.lifecycles import Connection, Lifecycle

pytestmark = pytest.mark.contract

CONNECTION = "ee2eb431-c0fa-4dc9-93fa-d29781c12bcd"  # Prism lists it Linked
BASIQ = Connection(CONNECTION, "Banking", "dfxm", "Basiq")


@pytest.fixture
def journey(journey_app):
    return journey_app.extensions["journey"]


def linking_company(journey) -> str:
    """company.created and connection.created arrive; connection.connected and
    read.completed.initial never do."""
    life = Lifecycle()
    events = [life.company("company.created"), life.connection("connection.created", BASIQ)]
    journey.updates.apply({life.company_id: [parse_codat_event(e) for e in events]})
    assert journey.store.get(life.company_id).state.value == "linking"
    return life.company_id


def later(journey, seconds):
    start = journey.clock()
    journey.clock = lambda: start + seconds


def test_a_company_not_yet_due_costs_no_codat_call(journey, codat_mock):
    linking_company(journey)
    later(journey, journey.settings.reconcile_linking_after_seconds - 60)
    assert reconcile_due(journey) == {"checked": 0, "changed": 0, "stuck": 0, "failed": 0}
    assert codat_mock.calls == []


def test_reconciliation_alone_brings_a_linking_company_to_ready(journey, codat_mock):
    company_id = linking_company(journey)
    assert journey.redis.zscore(index_key(journey.store.keys, "linking"), company_id)
    later(journey, journey.settings.reconcile_linking_after_seconds + 1)

    totals = reconcile_due(journey)

    assert totals == {"checked": 1, "changed": 1, "stuck": 0, "failed": 0}
    record = journey.store.get(company_id)
    assert record.state.value == "ready"
    tail = [(h.from_state, h.to_state, h.synthetic) for h in record.history[-2:]]
    assert tail == [("linking", "linked", True), ("linked", "ready", True)]
    assert all(h.event_id.startswith("reconciliation:") for h in record.history[-2:])
    assert [c.path.rsplit("/", 1)[-1] for c in codat_mock.calls] == [
        "connections",  # list-connections: Linked
        "history",  # list-pull-operations: nothing about this connection
        "dataStatus",  # get-company-data-status: every data type Complete
    ]
    for state in ("linking", "linked", "syncing"):
        assert journey.redis.zscore(index_key(journey.store.keys, state), company_id) is None


def test_the_webhooks_arriving_late_change_nothing(journey, codat_mock):
    company_id = linking_company(journey)
    later(journey, 3600)
    reconcile_due(journey)
    before = journey.store.get(company_id)
    life = Lifecycle(company_id=company_id)
    late = [
        life.connection("connection.connected", BASIQ),
        life.read("read.completed.initial", BASIQ),
    ]
    journey.updates.apply({company_id: [parse_codat_event(e) for e in late]})
    after = journey.store.get(company_id)
    assert after.state == before.state and after.history == before.history


def test_a_company_deleted_at_codat_is_recorded_deleted(journey, codat_mock):
    company_id = linking_company(journey)
    codat_mock.prefer[r"GET /companies/.*/connections"] = "code=404"
    later(journey, 3600)
    reconcile_due(journey)
    record = journey.store.get(company_id)
    assert record.state.value == "revoked" and record.facts.deleted_at
    assert record.history[-1].event_type == "company.deleted" and record.history[-1].synthetic


def test_codat_failing_loses_nothing_and_retries_a_threshold_later(journey, codat_mock):
    company_id = linking_company(journey)
    before = journey.store.get(company_id)
    codat_mock.prefer[r"GET /companies/.*/connections"] = "code=500"
    later(journey, 3600)
    assert reconcile_due(journey)["failed"] == 1
    assert journey.store.get(company_id) == before
    assert reconcile_due(journey)["failed"] == 0, "not due again until a threshold has passed"
    del codat_mock.prefer[r"GET /companies/.*/connections"]
    later(journey, 3600)
    assert reconcile_due(journey)["changed"] == 1


def test_flask_reconcile_command_reconciles_one_company_now(journey_app, journey, codat_mock):
    company_id = linking_company(journey)
    result = journey_app.test_cli_runner().invoke(args=["reconcile", company_id])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["stateBefore"], report["stateAfter"]) == ("linking", "ready")
    assert report["syncEvidence"] == "data-status"
    types = [e["type"] for e in report["events"]]
    assert types == ["connection.connected", "read.completed.initial"]


def test_flask_reconcile_command_reports_codat_failures(journey_app, journey, codat_mock):
    company_id = linking_company(journey)
    codat_mock.prefer[r"GET /companies/.*/connections"] = "code=503"
    result = journey_app.test_cli_runner().invoke(args=["reconcile", company_id])
    assert result.exit_code == 1
    assert "codat_error" in result.output


def test_stuck_reports_are_served(journey_app, journey):
    company_id = linking_company(journey)
    journey.redis.hset(
        journey.keys.reconcile_stuck,
        company_id,
        json.dumps({"companyId": company_id, "state": "linking", "reason": "link_expired"}),
    )
    body = journey_app.test_client().get("/api/reconciliation/stuck", headers=AUTH).json
    assert [r["companyId"] for r in body["results"]] == [company_id]
