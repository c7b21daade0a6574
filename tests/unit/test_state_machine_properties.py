"""Order independence, idempotence and no-regression, for all orders and repetitions.

Each lifecycle comes from Codat's own examples (tests.support.lifecycles). The
claims are about every permutation and every number of duplicate deliveries,
so hypothesis picks them.
"""

from __future__ import annotations

import uuid
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from state_machine import CompanyFacts, CompanyState, apply_events, parse_codat_event
from tests.support.lifecycles import LIFECYCLES, build

LIFECYCLE_NAMES = sorted(LIFECYCLES)


def events_of(kind: str):
    life, expected = build(kind)
    return life.company_id, [parse_codat_event(body) for body in life.events], expected


def fold(company_id, events):
    return apply_events(CompanyFacts(company_id=company_id), events)


@st.composite
def deliveries(draw, kind=None):
    """A lifecycle, shuffled, each event delivered one to three times."""
    kind = kind or draw(st.sampled_from(LIFECYCLE_NAMES))
    company_id, events, expected = events_of(kind)
    repeated = [e for e in events for _ in range(draw(st.integers(1, 3)))]
    shuffled = draw(st.permutations(repeated))
    return kind, company_id, events, shuffled, expected


@settings(max_examples=400, deadline=None)
@given(deliveries())
def test_any_order_and_repetition_gives_the_same_facts_and_state(case):
    kind, company_id, events, shuffled, expected = case
    in_order = fold(company_id, events)
    delivered = fold(company_id, shuffled)
    assert in_order.state == CompanyState(expected), kind
    assert delivered.state == in_order.state
    assert delivered.facts == in_order.facts


@settings(max_examples=200, deadline=None)
@given(deliveries(), st.data())
def test_splitting_deliveries_into_batches_changes_nothing(case, data):
    """Workers apply events in batches of any size; the result must not care."""
    _, company_id, _, shuffled, _ = case
    cut = data.draw(st.integers(0, len(shuffled)))
    first = fold(company_id, shuffled[:cut])
    second = apply_events(first.facts, shuffled[cut:])
    assert second.facts == fold(company_id, shuffled).facts
    assert second.state == fold(company_id, shuffled).state


@settings(max_examples=200, deadline=None)
@given(deliveries(), st.data())
def test_a_replayed_event_never_changes_anything(case, data):
    _, company_id, events, shuffled, _ = case
    done = fold(company_id, shuffled)
    again = apply_events(done.facts, data.draw(st.lists(st.sampled_from(events), min_size=1)))
    assert again.facts == done.facts
    assert again.transitions == ()


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(LIFECYCLE_NAMES), st.data())
def test_a_stale_event_never_moves_a_company_backwards(kind, data):
    """An event Codat generated earlier than the newest one for its connection,
    arriving last under a new id, leaves state and facts as they were."""
    company_id, events, _ = events_of(kind)
    done = fold(company_id, events)
    newest = max(e.generated_at for e in events)
    stale_source = data.draw(st.sampled_from([e for e in events if e.generated_at < newest]))
    stale = replace(stale_source, id=str(uuid.uuid4()))
    after = apply_events(done.facts, [stale])
    assert after.state == done.state
    assert after.transitions == ()


@settings(max_examples=200, deadline=None)
@given(deliveries())
def test_transitions_chain_from_created_to_the_final_state(case):
    _, company_id, _, shuffled, _ = case
    outcome = fold(company_id, shuffled)
    state = CompanyState.CREATED
    for transition in outcome.transitions:
        assert transition.from_state == state
        assert transition.to_state != transition.from_state
        state = transition.to_state
    assert state == outcome.state


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(LIFECYCLE_NAMES), min_size=2, max_size=4), st.randoms())
def test_companies_do_not_interfere(kinds, random):
    """Events of several companies interleaved: each company's fold sees only its own."""
    lifecycles = [events_of(kind) for kind in kinds]
    mixed = [e for _, events, _ in lifecycles for e in events]
    random.shuffle(mixed)
    for company_id, _, expected in lifecycles:
        assert fold(company_id, mixed).state == CompanyState(expected)
