"""The rules, one by one: what each event means and how the state is derived."""

from __future__ import annotations

import pytest

from devtools.lifecycles import Lifecycle, new_connection, spec_example
from state_machine import (
    CompanyFacts,
    CompanyState,
    ConnectionFacts,
    InvalidEvent,
    apply_events,
    derive_state,
    parse_codat_event,
)
from state_machine.events import HANDLED_EVENT_TYPES, canonical_timestamp

S = CompanyState


def fold(life: Lifecycle):
    return apply_events(
        CompanyFacts(company_id=life.company_id), [parse_codat_event(b) for b in life.events]
    )


@pytest.mark.parametrize(
    ("connections", "extra", "expected"),
    [
        ((), {}, S.CREATED),
        ((ConnectionFacts("a", status="PendingAuth"),), {}, S.LINKING),
        ((ConnectionFacts("a", status="Linked", ever_linked=True),), {}, S.LINKED),
        (
            (ConnectionFacts("a", status="Linked", ever_linked=True),),
            {"sync_started_at": "t"},
            S.SYNCING,
        ),
        (
            (ConnectionFacts("a", status="Linked", ever_linked=True),),
            {"sync_started_at": "t", "initial_sync_completed_at": "t"},
            S.READY,
        ),
        # initial sync seen but nothing linked: not ready
        (
            (ConnectionFacts("a", status="PendingAuth"),),
            {"initial_sync_completed_at": "t"},
            S.LINKING,
        ),
        ((ConnectionFacts("a", status="Unlinked", ever_linked=True),), {}, S.REVOKED),
        ((ConnectionFacts("a", status="Deauthorized", ever_linked=True),), {}, S.REVOKED),
        (
            (ConnectionFacts("a", status="Linked", ever_linked=True, deleted_at="t"),),
            {},
            S.REVOKED,
        ),
        # a pending connection that was deleted before linking leaves nothing
        ((ConnectionFacts("a", status="PendingAuth", deleted_at="t"),), {}, S.CREATED),
        # one of two banking connections unlinked: still linked
        (
            (
                ConnectionFacts("a", status="Unlinked", ever_linked=True),
                ConnectionFacts("b", status="Linked", ever_linked=True),
            ),
            {"sync_started_at": "t", "initial_sync_completed_at": "t"},
            S.READY,
        ),
        # company deleted trumps everything
        (
            (ConnectionFacts("a", status="Linked", ever_linked=True),),
            {"initial_sync_completed_at": "t", "deleted_at": "t"},
            S.REVOKED,
        ),
    ],
)
def test_derive_state(connections, extra, expected):
    facts = CompanyFacts(company_id="c", connections=connections, **extra)
    assert derive_state(facts) == expected


def test_happy_path_transitions_carry_their_cause():
    life = Lifecycle()
    connection = new_connection()
    life.company("company.created")
    created = life.connection("connection.created", connection)
    connected = life.connection("connection.connected", connection)
    read = life.read("read.completed", connection)
    initial = life.read("read.completed.initial", connection)
    outcome = fold(life)
    assert [
        (t.from_state, t.to_state, t.cause_event_id, t.cause_event_type)
        for t in outcome.transitions
    ] == [
        (S.CREATED, S.LINKING, created["id"], "connection.created"),
        (S.LINKING, S.LINKED, connected["id"], "connection.connected"),
        (S.LINKED, S.SYNCING, read["id"], "read.completed"),
        (S.SYNCING, S.READY, initial["id"], "read.completed.initial"),
    ]
    assert outcome.facts.initial_sync_completed_at == canonical_timestamp(initial["generatedDate"])


def test_failed_connection_keeps_linking_and_records_codats_error():
    life = Lifecycle()
    connection = new_connection()
    life.connection("connection.created", connection)
    failed = life.connection("connection.failed", connection)
    outcome = fold(life)
    assert outcome.state == S.LINKING
    error = outcome.facts.last_error
    expected = failed["payload"]["connection"]["dataConnectionErrors"][0]
    assert (error.status_code, error.status_text, error.error_message) == (
        expected["statusCode"],
        expected["statusText"],
        expected["errorMessage"],
    )


def test_initial_sync_before_connected_goes_straight_to_ready():
    life = Lifecycle()
    connection = new_connection()
    created = life.connection("connection.created", connection)
    connected = life.connection("connection.connected", connection)
    initial = life.read("read.completed.initial", connection)
    facts = CompanyFacts(company_id=life.company_id)
    outcome = apply_events(facts, [parse_codat_event(b) for b in (created, initial, connected)])
    assert outcome.state == S.READY


def test_a_read_proves_the_connection_was_linked_even_if_connected_never_came():
    life = Lifecycle()
    connection = new_connection()
    life.connection("connection.created", connection)
    life.read("read.completed.initial", connection)
    assert fold(life).state == S.READY


def test_a_linked_status_stated_by_codat_outranks_one_inferred_at_the_same_instant():
    life = Lifecycle()
    connection = new_connection()
    life.connection("connection.created", connection)
    life.connection("connection.connected", connection)
    read = life.read("read.completed.initial", connection)
    disconnected = life.connection("connection.disconnected", connection, example="Unlinked")
    disconnected["generatedDate"] = read["generatedDate"]
    assert fold(life).state == S.REVOKED


def test_reconnected_after_revocation_returns_to_linked_when_never_synced():
    life = Lifecycle()
    connection = new_connection()
    life.connection("connection.created", connection)
    life.connection("connection.connected", connection)
    life.connection("connection.disconnected", connection, example="Unlinked")
    life.connection("connection.reconnected", connection)
    states = [t.to_state for t in fold(life).transitions]
    assert states == [S.LINKING, S.LINKED, S.REVOKED, S.LINKED]


def test_deleted_connection_stays_deleted_whatever_comes_later():
    life = Lifecycle()
    connection = new_connection()
    life.connection("connection.created", connection)
    life.connection("connection.connected", connection)
    deleted = life.connection("connection.deleted", connection)
    life.connection("connection.reconnected", connection)
    outcome = fold(life)
    assert outcome.state == S.REVOKED
    assert outcome.facts.connection(connection.id).deleted_at == canonical_timestamp(
        deleted["generatedDate"]
    )


def test_unhandled_event_types_change_nothing():
    body = spec_example("client.rateLimit.reached")
    event = parse_codat_event(body)
    assert not event.handled
    facts = CompanyFacts(company_id="c")
    assert apply_events(facts, [event]).facts == facts


def test_an_event_of_another_company_changes_nothing():
    life = Lifecycle()
    life.company("company.created")
    facts = CompanyFacts(company_id="someone-else")
    assert apply_events(facts, [parse_codat_event(life.events[0])]).facts == facts


@pytest.mark.parametrize("event_type", sorted(HANDLED_EVENT_TYPES))
def test_every_spec_example_of_a_handled_event_parses(event_type):
    event = parse_codat_event(spec_example(event_type))
    assert event.type == event_type
    assert event.company_id == "0498e921-9b53-4396-a412-4f2f5983b0a2"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b.pop("id"), "body.id is required"),
        (lambda b: b.update(generatedDate="yesterday"), "ISO 8601"),
        (lambda b: b.update(payload=[]), "payload must be an object"),
        (lambda b: b["payload"].pop("referenceCompany"), "referenceCompany must be an object"),
        (lambda b: b["payload"]["connection"].update(status="Sideways"), "status must be one of"),
        (lambda b: b["payload"]["connection"].pop("id"), "connection.id is required"),
        (lambda b: b["payload"]["connection"].update(dataConnectionErrors={}), "must be an array"),
    ],
)
def test_malformed_bodies_are_refused_with_a_reason(mutate, message):
    body = spec_example("connection.failed")
    mutate(body)
    with pytest.raises(InvalidEvent, match=message):
        parse_codat_event(body)


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("2022-10-27T10:22:43.6464237Z", "2022-10-27T10:22:43.646423Z"),
        ("2024-08-08T17:10:34.015Z", "2024-08-08T17:10:34.015000Z"),
        ("2021-11-15T01:00:00-05:00", "2021-11-15T06:00:00.000000Z"),
        ("2021-11-15T01:00:00", "2021-11-15T01:00:00.000000Z"),
        ("2022-10-23", "2022-10-23T00:00:00.000000Z"),
    ],
)
def test_codat_datetime_forms_are_normalised_to_sortable_utc(raw, canonical):
    assert canonical_timestamp(raw) == canonical
