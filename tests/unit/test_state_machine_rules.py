"""The rules, one by one: what each event means and how the state is derived."""

from __future__ import annotations

from dataclasses import replace

import pytest

from state_machine import (
    CompanyFacts,
    CompanyState,
    ConnectionFacts,
    InvalidEvent,
    apply_events,
    derive_state,
    parse_codat_event,
)
from state_machine.events import HANDLED_EVENT_TYPES, canonical_timestamp, unknown_values
from state_machine.facts import DataTypeFacts
from state_machine.readiness import ANY_DATA, ReadinessGate, assess
from tests.support.lifecycles import Lifecycle, new_connection, spec_example

S = CompanyState


def fold(life: Lifecycle, gate: ReadinessGate = ANY_DATA, bodies=None):
    bodies = life.events if bodies is None else bodies
    return apply_events(
        CompanyFacts(company_id=life.company_id), [parse_codat_event(b) for b in bodies], gate
    )


def read(name="invoices", *, initial=False, complete=True) -> DataTypeFacts:
    """One data type's facts after a single read at "t"."""
    return DataTypeFacts(
        data_type=name,
        status="Complete" if complete else "FetchError",
        status_key=("t", int(complete), "e"),
        first_complete_at="t" if complete else None,
        initial_read_at="t" if initial else None,
        initial_complete_at="t" if initial and complete else None,
    )


def linked(connection_id="a", *data_types: DataTypeFacts, status="Linked") -> ConnectionFacts:
    return ConnectionFacts(connection_id, status=status, ever_linked=True, data_types=data_types)


@pytest.mark.parametrize(
    ("connections", "extra", "expected"),
    [
        ((), {}, S.CREATED),
        ((ConnectionFacts("a", status="PendingAuth"),), {}, S.LINKING),
        ((linked("a"),), {}, S.LINKED),
        ((linked("a", read()),), {}, S.SYNCING),
        ((linked("a", read(initial=True)),), {}, S.READY),
        # an initial read whose data types all failed: still syncing
        ((linked("a", read(initial=True, complete=False)),), {}, S.SYNCING),
        # initial sync seen but nothing linked: not ready
        (
            (ConnectionFacts("a", status="PendingAuth", data_types=(read(initial=True),)),),
            {},
            S.LINKING,
        ),
        ((linked("a", status="Unlinked"),), {}, S.REVOKED),
        ((linked("a", status="Deauthorized"),), {}, S.REVOKED),
        # a status Codat may add one day is never taken as linked
        ((linked("a", read(initial=True), status="Suspended"),), {}, S.REVOKED),
        ((replace(linked("a"), deleted_at="t"),), {}, S.REVOKED),
        # a pending connection that was deleted before linking leaves nothing
        ((ConnectionFacts("a", status="PendingAuth", deleted_at="t"),), {}, S.CREATED),
        # one of two banking connections unlinked: the other one is ready
        ((linked("a", status="Unlinked"), linked("b", read(initial=True))), {}, S.READY),
        # the synced connection is gone, the new one has not synced yet
        ((linked("a", read(initial=True), status="Unlinked"), linked("b")), {}, S.LINKED),
        # company deleted trumps everything
        ((linked("a", read(initial=True)),), {"deleted_at": "t"}, S.REVOKED),
    ],
)
def test_derive_state(connections, extra, expected):
    facts = CompanyFacts(company_id="c", connections=connections, **extra)
    assert derive_state(facts) == expected


@pytest.mark.parametrize(
    ("data_types", "expected"),
    [
        ((), S.LINKED),
        ((read("invoices", initial=True),), S.SYNCING),
        ((read("balanceSheet", initial=True),), S.SYNCING),
        # a complete read that is not an initial one counts too: the data is there
        ((read("balanceSheet"), read("profitAndLoss", initial=True)), S.READY),
        ((read("balanceSheet", initial=True), read("profitAndLoss", complete=False)), S.SYNCING),
    ],
)
def test_a_gate_needs_every_listed_data_type_complete(data_types, expected):
    facts = CompanyFacts(company_id="c", connections=(linked("a", *data_types),))
    gate = ReadinessGate.of(["profitAndLoss", "balanceSheet"])
    assert derive_state(facts, gate) == expected


def test_a_gate_can_be_met_by_several_connections_and_names_them_as_its_basis():
    facts = CompanyFacts(
        company_id="c",
        connections=(
            linked("acc", read("balanceSheet", initial=True)),
            linked("bank", read("bankTransactions", initial=True)),
            linked("other", read("invoices", initial=True)),
        ),
    )
    readiness = assess(facts, ReadinessGate.of(["balanceSheet", "bankTransactions"]))
    assert readiness.met and readiness.basis == {"acc", "bank"}
    assert not readiness.missing


def test_readiness_names_what_is_missing_and_what_is_failing():
    facts = CompanyFacts(
        company_id="c",
        connections=(linked("a", read("balanceSheet", initial=True, complete=False)),),
    )
    readiness = assess(facts, ReadinessGate.of(["balanceSheet", "profitAndLoss"]))
    assert not readiness.met
    assert readiness.missing == ("balanceSheet", "profitAndLoss")
    assert readiness.failing == (("a", "balanceSheet", "FetchError"),)


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


# -- what real Codat sends (issue 9): each case through parse_codat_event and the merge


def test_a_read_that_fails_after_deauthorization_does_not_bring_the_company_back():
    life = Lifecycle()
    connection = new_connection()
    life.connection("connection.created", connection)
    life.connection("connection.connected", connection)
    life.read("read.completed.initial", connection)
    life.connection("connection.disconnected", connection, example="De-authorized")
    life.read("read.completed", connection, data_types=("invoices",), status="AuthError")
    outcome = fold(life)
    assert outcome.state == S.REVOKED
    invoices = outcome.facts.connection(connection.id).data_type("invoices")
    assert (invoices.status, invoices.error_status) == ("AuthError", "AuthError")
    assert invoices.error_issues[0].message == "Codat could not read it: AuthError"


@pytest.mark.parametrize("status", ["AuthError", "PermissionsError", "FetchError"])
def test_a_failed_read_proves_nothing_about_linkage(status):
    life = Lifecycle()
    connection = new_connection()
    life.connection("connection.created", connection)
    life.read("read.completed.initial", connection, status=status)
    outcome = fold(life)
    assert outcome.state == S.LINKING
    assert not outcome.facts.connection(connection.id).ever_linked


def test_an_initial_read_whose_data_types_all_failed_keeps_the_company_syncing():
    life = Lifecycle()
    connection = new_connection()
    life.connection("connection.created", connection)
    life.connection("connection.connected", connection)
    life.read("read.completed.initial", connection, data_types=("invoices",), status="FetchError")
    life.read("read.completed.initial", connection, data_types=("bills",), status="AuthError")
    outcome = fold(life)
    assert outcome.state == S.SYNCING
    assert assess(outcome.facts).failing == (
        (connection.id, "bills", "AuthError"),
        (connection.id, "invoices", "FetchError"),
    )


def test_a_new_platform_linked_after_the_first_is_deleted_waits_for_its_own_sync():
    life = Lifecycle()
    first, second = new_connection(), new_connection()
    life.connection("connection.created", first)
    life.connection("connection.connected", first)
    life.read("read.completed.initial", first)
    life.connection("connection.deleted", first)
    life.connection("connection.created", second)
    life.connection("connection.connected", second)
    assert [t.to_state for t in fold(life).transitions][-2:] == [S.REVOKED, S.LINKED]
    life.read("read.completed.initial", second)
    assert fold(life).state == S.READY


def test_the_first_initial_read_of_one_data_type_is_not_the_gated_initial_sync():
    life = Lifecycle()
    connection = new_connection()
    life.connection("connection.created", connection)
    life.connection("connection.connected", connection)
    life.read("read.completed.initial", connection, data_types=("invoices",))
    gate = ReadinessGate.of(["balanceSheet"])
    assert fold(life, gate).state == S.SYNCING
    life.read("read.completed.initial", connection, data_types=("balanceSheet",))
    assert fold(life, gate).state == S.READY


def test_an_unknown_connection_status_is_accepted_stored_verbatim_and_never_linked():
    life = Lifecycle()
    connection = new_connection()
    life.connection("connection.created", connection)
    life.connection("connection.connected", connection)
    life.read("read.completed.initial", connection)
    body = life.connection("connection.disconnected", connection, status="Suspended")
    assert unknown_values(parse_codat_event(body)) == [("connection_status", "Suspended")]
    outcome = fold(life)
    assert outcome.facts.connection(connection.id).status == "Suspended"
    assert outcome.state == S.REVOKED
    # on its own, the unknown status does not make a connection linked either
    alone = fold(life, bodies=[life.events[0], body])
    assert alone.state == S.CREATED and not alone.facts.connections[0].ever_linked


def test_unknown_values_of_every_kind_are_listed():
    life = Lifecycle()
    connection = new_connection()
    read = parse_codat_event(life.read("read.completed", connection, status="Throttled"))
    assert set(unknown_values(read)) == {("data_type_status", "Throttled")}
    body = life.connection("connection.created", connection)
    body["payload"]["connection"]["sourceType"] = "Payroll"
    assert unknown_values(parse_codat_event(body)) == [("source_type", "Payroll")]
    other = parse_codat_event(spec_example("client.rateLimit.reached") | {"eventType": "x.new"})
    assert unknown_values(other) == [("event_type", "x.new")]


def test_an_unknown_data_type_status_is_stored_and_not_taken_as_data():
    life = Lifecycle()
    connection = new_connection()
    life.connection("connection.created", connection)
    life.connection("connection.connected", connection)
    life.read("read.completed.initial", connection, status="Throttled")
    outcome = fold(life)
    assert outcome.state == S.SYNCING
    assert outcome.facts.connection(connection.id).data_types[0].status == "Throttled"


def test_reconnecting_a_connection_that_had_synced_is_ready_again_without_a_new_read():
    life = Lifecycle()
    connection = new_connection()
    life.connection("connection.created", connection)
    life.connection("connection.connected", connection)
    life.read("read.completed.initial", connection)
    life.connection("connection.disconnected", connection, example="Unlinked")
    life.connection("connection.reconnected", connection)
    states = [t.to_state for t in fold(life).transitions]
    assert states == [S.LINKING, S.LINKED, S.READY, S.REVOKED, S.READY]


def test_every_element_of_data_types_is_used_including_several_connections():
    life = Lifecycle()
    accounting, bank = new_connection(), new_connection("Banking")
    for connection in (accounting, bank):
        life.connection("connection.created", connection)
        life.connection("connection.connected", connection)
    life.read("read.completed.initial", accounting, bank, data_types=("invoices", "bills"))
    facts = fold(life).facts
    for connection in (accounting, bank):
        names = [d.data_type for d in facts.connection(connection.id).data_types]
        assert names == ["bills", "invoices"]
    assert assess(facts).basis == {accounting.id, bank.id}


def test_the_latest_read_of_a_data_type_wins_whatever_the_arrival_order():
    life = Lifecycle()
    connection = new_connection()
    life.connection("connection.created", connection)
    first = life.read("read.completed.initial", connection, data_types=("invoices",))
    failed = life.read("read.completed", connection, data_types=("invoices",), status="FetchError")
    changed = life.read("read.completed", connection, data_types=("invoices",), modified=True)
    forward = fold(life).facts
    backward = fold(life, bodies=[life.events[0], changed, failed, first]).facts
    assert forward == backward
    invoices = forward.connection(connection.id).data_type("invoices")
    assert invoices.status == "Complete"
    assert invoices.first_complete_at == canonical_timestamp(first["generatedDate"])
    assert invoices.initial_read_at == invoices.initial_complete_at == invoices.first_complete_at
    assert invoices.modified_at == canonical_timestamp(changed["generatedDate"])
    assert invoices.error_status == "FetchError"
    assert invoices.last_read_at == canonical_timestamp(changed["generatedDate"])


def test_two_statuses_of_a_data_type_at_the_same_instant_resolve_the_same_way_in_any_order():
    life = Lifecycle()
    connection = new_connection()
    a = life.read("read.completed", connection, data_types=("invoices",))
    b = life.read("read.completed", connection, data_types=("invoices",), status="FetchError")
    b["generatedDate"] = a["generatedDate"]
    assert fold(life, bodies=[a, b]).facts == fold(life, bodies=[b, a]).facts
