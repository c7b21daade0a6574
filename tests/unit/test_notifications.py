"""What subscribers are told: company.ready once per new basis, stable ids,
failures and changes once per event."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from state_machine import CompanyFacts, apply_events, parse_codat_event
from state_machine.notifications import notification_id, notifications_for, ready_connections
from state_machine.readiness import ANY_DATA, ReadinessGate
from tests.support.lifecycles import LIFECYCLES, Lifecycle, build, new_connection


def notify_in_batches(company_id, events, cuts=(), gate=ANY_DATA):
    """Apply events batch by batch, as workers do, carrying what the company
    record keeps between batches (the connections that made it ready)."""
    facts, ready, notes = CompanyFacts(company_id=company_id), None, []
    state = None
    bounds = [0, *sorted(cuts), len(events)]
    for start, end in itertools.pairwise(bounds):
        outcome = apply_events(facts, events[start:end], gate, start=state)
        notes += notifications_for(outcome, ready_before=ready)
        ready = ready_connections(outcome, ready)
        facts, state = outcome.facts, outcome.state
    return notes


def events_of(life):
    return [parse_codat_event(b) for b in life.events]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(LIFECYCLES)), st.data())
def test_batches_and_repetitions_never_change_what_is_notified(kind, data):
    life, _ = build(kind)
    order = data.draw(st.permutations(events_of(life)))
    repeated = [e for e in order for _ in range(data.draw(st.integers(1, 3)))]
    cuts = data.draw(st.lists(st.integers(0, len(repeated)), max_size=4))
    once = notify_in_batches(life.company_id, order)
    notes = notify_in_batches(life.company_id, repeated, cuts)
    assert [n.id for n in notes] == [n.id for n in once]
    ids = [n.id for n in notes]
    assert len(ids) == len(set(ids)), "no notification is emitted twice"
    ready = [n for n in notes if n.type == "company.ready"]
    if ready:  # the first readiness has the company's own id, and says so
        assert ready[0].data["first"] is True
        assert ready[0].id == notification_id("company.ready", life.company_id)
        assert all(not n.data["first"] for n in ready[1:])


@pytest.mark.parametrize(
    ("kind", "readies"),
    [
        ("happy_path", 1),
        ("reconnected", 1),  # the connection that had synced comes back: no news
        ("new_platform_after_delete", 1),  # the new platform has not synced yet
        ("new_platform_synced_after_delete", 2),  # a new platform made it ready again
        ("initial_reads_all_failed", 0),
        ("failed_read_after_deauthorization", 1),
        ("linked_waiting_for_sync", 0),
        ("syncing", 0),
    ],
)
def test_company_ready_once_per_basis_never_seen_before(kind, readies):
    life, _ = build(kind)
    notes = notify_in_batches(life.company_id, events_of(life))
    assert len([n for n in notes if n.type == "company.ready"]) == readies


def test_a_second_platform_is_announced_with_its_own_connection():
    life, _ = build("new_platform_synced_after_delete")
    first, second = [
        n for n in notify_in_batches(life.company_id, events_of(life)) if n.type == "company.ready"
    ]
    [new] = second.data["connectionIds"]
    assert new not in first.data["connectionIds"]
    assert second.id == notification_id("company.ready", life.company_id, new)
    assert second.data["first"] is False
    assert {d["connectionId"] for d in second.data["dataTypes"]} == {new}


def test_company_ready_waits_for_the_gate_and_lists_what_made_it():
    life = Lifecycle()
    connection = new_connection()
    life.connection("connection.created", connection)
    life.connection("connection.connected", connection)
    for name in ("invoices", "profitAndLoss", "balanceSheet"):
        life.read("read.completed.initial", connection, data_types=(name,))
    gate = ReadinessGate.of(["balanceSheet", "profitAndLoss"])
    events = events_of(life)
    for cut in range(len(events)):
        notes = notify_in_batches(life.company_id, events[:cut], gate=gate)
        assert not [n for n in notes if n.type == "company.ready"]
    [ready] = [
        n
        for n in notify_in_batches(life.company_id, events, gate=gate)
        if n.type == "company.ready"
    ]
    assert ready.data["readyDataTypes"] == ["balanceSheet", "profitAndLoss"]
    assert ready.data["connectionIds"] == [connection.id]
    assert ready.data["cause"]["eventId"] == life.events[-1]["id"]
    assert {d["type"] for d in ready.data["dataTypes"]} == {
        "balanceSheet",
        "invoices",
        "profitAndLoss",
    }
    assert all(d["status"] == "Complete" and d["completedAt"] for d in ready.data["dataTypes"])


def test_ids_are_derived_from_what_happened():
    life, _ = build("happy_path")
    events = events_of(life)
    first = notify_in_batches(life.company_id, events)
    second = notify_in_batches(life.company_id, events, [2])
    assert [n.id for n in first] == [n.id for n in second]
    assert [n.type for n in first] == ["company.state_changed"] * 4 + ["company.ready"]
    change = first[0].data
    assert change["from"] == "created" and change["to"] == "linking"
    assert change["cause"]["eventType"] == "connection.created"


def test_company_revoked_carries_its_cause():
    life, _ = build("company_deleted")
    [revoked] = [
        n
        for n in notify_in_batches(life.company_id, events_of(life))
        if n.type == "company.revoked"
    ]
    assert revoked.data["companyDeleted"] is True
    assert revoked.data["cause"]["eventType"] == "company.deleted"


def test_connection_failed_is_notified_once_with_codats_reason():
    life = Lifecycle()
    connection = new_connection()
    life.connection("connection.created", connection)
    failed = life.connection("connection.failed", connection)
    events = events_of(life)
    notes = notify_in_batches(life.company_id, events + events, [1, 2, 3])
    [note] = [n for n in notes if n.type == "connection.failed"]
    assert note.data["statusCode"] == "403"
    assert note.data["statusText"] == "User cancelled linking"
    assert note.data["connectionId"] == connection.id
    assert note.data["cause"]["eventId"] == failed["id"]


def test_sync_failed_once_per_read_event_that_shows_the_failure():
    life, _ = build("initial_reads_all_failed")
    events = events_of(life)
    notes = notify_in_batches(life.company_id, events + events, [1, 3, 5])
    failed = [n for n in notes if n.type == "company.sync_failed"]
    assert [n.data["cause"]["eventId"] for n in failed] == [b["id"] for b in life.events[-2:]]
    last = failed[-1].data
    assert {(d["type"], d["status"]) for d in last["dataTypes"]} == {
        ("bills", "AuthError"),
        ("invoices", "FetchError"),
    }
    assert last["dataTypes"][0]["issues"][0]["message"].startswith("Codat could not read it")


def test_sync_failed_with_a_gate_names_only_the_gated_types_and_not_once_they_are_there():
    life = Lifecycle()
    connection = new_connection()
    life.connection("connection.created", connection)
    life.connection("connection.connected", connection)
    life.read("read.completed.initial", connection, data_types=("invoices",), status="FetchError")
    gate = ReadinessGate.of(["balanceSheet"])
    assert not [
        n
        for n in notify_in_batches(life.company_id, events_of(life), gate=gate)
        if n.type == "company.sync_failed"
    ]
    life.read(
        "read.completed.initial", connection, data_types=("balanceSheet",), status="AuthError"
    )
    [failed] = [
        n
        for n in notify_in_batches(life.company_id, events_of(life), gate=gate)
        if n.type == "company.sync_failed"
    ]
    assert [d["type"] for d in failed.data["dataTypes"]] == ["balanceSheet"]


def test_data_changed_only_for_a_ready_company_with_modified_records():
    life, _ = build("data_changed_while_ready")
    notes = notify_in_batches(life.company_id, events_of(life))
    [changed] = [n for n in notes if n.type == "company.data_changed"]
    assert changed.data["dataTypes"] == [
        {"type": "invoices", "status": "Complete", "connectionId": changed.data["connectionId"]}
    ]
    assert changed.data["cause"]["eventId"] == life.events[-1]["id"]
    # the same modified read before the company is ready tells nobody
    early = Lifecycle()
    connection = new_connection()
    early.connection("connection.created", connection)
    early.connection("connection.connected", connection)
    early.read("read.completed", connection, modified=True)
    notes = notify_in_batches(early.company_id, events_of(early))
    assert not [n for n in notes if n.type == "company.data_changed"]
