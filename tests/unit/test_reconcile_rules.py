"""Reconciliation's decisions, for answers Prism cannot give (its examples
hold one Linked connection): pending links, expired links, pull histories.

`SpecCodat` stands in for *our* adapter (`codat_authflow.journey.codat.CodatClient`), not for
Codat's HTTP API: every HTTP call is contract-tested against Prism in
tests/contract. Its answers are the spec's own examples, adjusted per test.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from functools import cache

import fakeredis
import pytest

from codat_authflow.journey.codat import CodatNotFound
from codat_authflow.journey.connections import create_connection
from codat_authflow.journey.reconcile import reconcile_company, reconcile_due, stuck_reports
from codat_authflow.journey.service import Journey
from codat_authflow.settings import Settings
from codat_authflow.storage.companies import CompanyStore
from codat_authflow.storage.keys import Keys
from state_machine import CompanyState, parse_codat_event
from tests.support.lifecycles import Connection, Lifecycle
from tests.support.processes import REPO_ROOT

ENV = {
    "REDIS_URL": "redis://unused",
    "API_TOKEN": "t",
    "CODAT_WEBHOOK_SECRETS": "whsec_dGVzdC1zZWNyZXQ=",
    "CODAT_API_KEY": "a2V5",
}
NOW = 1_790_000_000.0  # 2026-09-21
DAY = 24 * 3600


@cache
def _spec():
    return json.loads((REPO_ROOT / "tests" / "data" / "Codat-Platform.json").read_text())


def _example(path, method, name):
    return copy.deepcopy(
        _spec()["paths"][path][method]["responses"]["200"]["content"]["application/json"][
            "examples"
        ][name]["value"]
    )


def iso(epoch):
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def codat_connection(connection: Connection, status, created):
    value = _example("/companies/{companyId}/connections/{connectionId}", "get", "Connection")
    value.update(
        id=connection.id,
        integrationKey=connection.platform_key,
        platformName=connection.platform_name,
        sourceType=connection.source_type,
        status=status,
        created=iso(created),
    )
    return value


def pull(connection_id, data_type, status, requested, completed=None):
    value = _example("/companies/{companyId}/data/history", "get", "Example")["results"][0]
    value.update(connectionId=connection_id, dataType=data_type, status=status,
                 requested=iso(requested))  # fmt: skip
    if completed:
        value["completed"] = iso(completed)
    return value


class SpecCodat:
    def __init__(self):
        self.connections: list[dict] = []
        self.pulls: list[dict] = []
        self.statuses = _example("/companies/{companyId}/dataStatus", "get", "Example")
        self.calls: list[str] = []

    def list_connections(self, company_id):
        self.calls.append("list-connections")
        return copy.deepcopy(self.connections)

    def get_connection(self, company_id, connection_id):
        self.calls.append("get-connection")
        for c in self.connections:
            if c["id"] == connection_id:
                return copy.deepcopy(c)
        raise CodatNotFound("no such connection", operation="get-connection", codat_status=404)

    def list_pull_operations(self, company_id):
        self.calls.append("list-pull-operations")
        return copy.deepcopy(self.pulls)

    def get_data_status(self, company_id):
        self.calls.append("get-company-data-status")
        return copy.deepcopy(self.statuses)

    def refresh_data_type(self, company_id, data_type, connection_id=None):
        self.calls.append(f"refresh-data-type:{connection_id}/{data_type}")
        return {"dataType": data_type, "status": "Initial"}

    def create_connection(self, company_id, platform_key):
        self.calls.append("create-connection")
        fresh = Connection("9a7f1c1e-3b2d-4c5e-8f90-1a2b3c4d5e6f")
        created = codat_connection(fresh, "PendingAuth", NOW)
        self.connections.append(created)
        return created


@pytest.fixture
def codat():
    return SpecCodat()


@pytest.fixture
def journey(codat):
    redis = fakeredis.FakeRedis()
    settings = Settings.from_env(ENV)
    store = CompanyStore(redis, Keys(settings.key_prefix))
    return Journey.build(settings, redis, store, codat=codat, clock=lambda: NOW)


XERO = Connection("51baa045-4836-4317-a42e-3542e991e581")


def in_linking(journey, *connections, start=NOW - 2 * DAY):
    life = Lifecycle()
    bodies = [life.connection("connection.created", c) for c in connections]
    stamp = iso(start).replace("Z", ".000000Z")
    journey.updates.apply(
        {life.company_id: [parse_codat_event(b) for b in bodies]}, now=lambda: stamp
    )
    return life.company_id


def test_a_company_whose_links_all_expired_is_reported_not_kept(journey, codat):
    company_id = in_linking(journey, XERO)
    codat.connections = [codat_connection(XERO, "PendingAuth", NOW - DAY - 60)]
    assert reconcile_due(journey) == {"checked": 1, "changed": 0, "stuck": 1, "failed": 0}
    (report,) = stuck_reports(journey)
    assert (report["companyId"], report["reason"]) == (company_id, "link_expired")
    assert report["connections"][0]["connectionId"] == XERO.id
    assert journey.index.sizes() == {"linking": 0, "linked": 0, "syncing": 0}
    codat.calls.clear()
    reconcile_due(journey)
    assert codat.calls == [], "no longer polled"

    # A new connection brings it back, with a fresh window.
    journey.redis.set(
        journey.keys.integration_cache("gbol"),
        json.dumps({"key": "gbol", "sourceType": "Accounting", "enabled": True}),
    )
    created = create_connection(journey, company_id, "gbol")
    assert created["status"] == "PendingAuth" and created["companyState"] == "linking"
    assert stuck_reports(journey) == []
    assert journey.index.started(company_id, CompanyState.LINKING) == NOW


def test_a_link_still_usable_is_checked_again_one_threshold_later(journey, codat):
    company_id = in_linking(journey, XERO)
    codat.connections = [codat_connection(XERO, "PendingAuth", NOW - 3600)]
    assert reconcile_due(journey)["stuck"] == 0
    assert journey.index.started(company_id, CompanyState.LINKING) == NOW
    codat.calls.clear()
    assert reconcile_due(journey)["checked"] == 0 and codat.calls == []


def test_pull_history_evidence_names_the_connections_and_data_types(journey, codat):
    company_id = in_linking(journey, XERO)
    codat.connections = [codat_connection(XERO, "Linked", NOW - 3600)]
    codat.pulls = [
        pull(XERO.id, "invoices", "Complete", NOW - 3000, NOW - 2900),
        pull(XERO.id, "bills", "Complete", NOW - 3000, NOW - 2800),
    ]
    report = reconcile_company(journey, company_id)
    assert (report.state_before, report.state_after) == ("linking", "ready")
    assert report.sync_evidence == "pull-operations"
    initial = [e for e in report.events if e["type"] == "read.completed.initial"]
    assert {
        (d["connectionId"], d["dataType"], d["status"]) for e in initial for d in e["dataTypes"]
    } == {
        (XERO.id, "invoices", "Complete"),
        (XERO.id, "bills", "Complete"),
    }
    assert report.events[-1]["at"] == iso(NOW - 2800).replace("Z", ".000000Z")
    assert "get-company-data-status" not in codat.calls
    codat.calls.clear()
    again = reconcile_company(journey, company_id)
    assert again.events == [], "what the facts already hold is not applied twice"


def test_a_sync_under_way_moves_the_company_to_syncing_only(journey, codat):
    company_id = in_linking(journey, XERO)
    codat.connections = [codat_connection(XERO, "Linked", NOW - 3600)]
    codat.pulls = [
        pull(XERO.id, "invoices", "FetchError", NOW - 3000, NOW - 2900),
        pull(XERO.id, "bills", "Fetching", NOW - 3000),
    ]
    report = reconcile_company(journey, company_id)
    assert report.state_after == "syncing"
    assert journey.index.started(company_id, CompanyState.SYNCING) == NOW


def test_failed_initial_reads_are_requeued_with_backoff_and_a_bounded_number_of_tries(
    journey, codat
):
    company_id = in_linking(journey, XERO)
    codat.connections = [codat_connection(XERO, "Linked", NOW - 3600)]
    codat.pulls = [
        pull(XERO.id, "invoices", "FetchError", NOW - 3000, NOW - 2900),
        pull(XERO.id, "customers", "NotSupported", NOW - 3000, NOW - 2900),
    ]
    report = reconcile_company(journey, company_id)
    assert report.state_after == "syncing"
    assert report.refreshed == [
        {"connectionId": XERO.id, "dataType": "invoices", "status": "FetchError", "try": 1}
    ]
    assert f"refresh-data-type:{XERO.id}/invoices" in codat.calls
    assert not any("customers" in call for call in codat.calls), "NotSupported is not retried"

    # Within the backoff: nothing. After it, the second try; after the last, never again.
    assert reconcile_company(journey, company_id).refreshed == []
    clock = [NOW]
    journey.clock = lambda: clock[0]
    tries = [1]
    for step in range(1, 6):
        clock[0] = NOW + step * 4 * 3600
        tries += [r["try"] for r in reconcile_company(journey, company_id).refreshed]
    assert tries == [1, 2, 3], "RECONCILE_REFRESH_MAX_TRIES (3) bounds the tries"
    from codat_authflow.observability.metrics import RECONCILIATION_ACTIONS, read_counters

    counts = read_counters(journey.redis, journey.keys.prefix)[RECONCILIATION_ACTIONS.name]
    assert counts[("refresh",)] == 3


def test_a_known_connection_codat_no_longer_has_is_recorded_deleted(journey, codat):
    bank = Connection("2e9d2c44-f675-40ba-8049-353bfcb5e171", "Banking", "dfxm", "Basiq")
    company_id = in_linking(journey, XERO, bank)
    codat.connections = [codat_connection(XERO, "PendingAuth", NOW - 60)]
    report = reconcile_company(journey, company_id)
    deleted = [e for e in report.events if e["type"] == "connection.deleted"]
    assert [e["connectionId"] for e in deleted] == [bank.id]
    assert codat.calls == ["list-connections", "get-connection"]
    record = journey.store.get(company_id)
    assert record.facts.connection(bank.id).deleted_at is not None
    assert record.state.value == "linking"


def test_a_company_being_reconciled_elsewhere_is_skipped(journey, codat):
    company_id = in_linking(journey, XERO)
    journey.redis.set(journey.keys.reconcile_lock(company_id), "other", ex=60)
    assert reconcile_company(journey, company_id).skipped == "already being reconciled"
    assert codat.calls == []


def test_without_a_codat_key_the_job_does_nothing(journey):
    journey.codat = None
    assert reconcile_due(journey)["skipped"] == "CODAT_API_KEY is not set"


def test_reconciliation_actions_are_counted(journey, codat):
    from codat_authflow.observability.metrics import RECONCILIATION_ACTIONS, read_counters

    company_id = in_linking(journey, XERO)
    codat.connections = [codat_connection(XERO, "Linked", NOW - 3600)]
    codat.pulls = [pull(XERO.id, "invoices", "Fetching", NOW - 3000)]
    report = reconcile_company(journey, company_id)
    counts = read_counters(journey.redis, journey.keys.prefix)[RECONCILIATION_ACTIONS.name]
    assert counts[("checked",)] == 1
    assert counts[("changed",)] == (1 if report.state_after != report.state_before else 0)
    applied = [e["type"] for e in report.events]
    assert applied, "the Linked connection was news"
    for event_type in set(applied):
        assert counts[(f"event:{event_type}",)] == applied.count(event_type)
