"""The funnel: pure computation (codat_authflow.funnel.compute) exhaustively, and the index and
loading around it (codat_authflow.storage.funnel) on a fake Redis with the real CompanyStore."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import fakeredis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codat_authflow.company_updates import CompanyUpdates
from codat_authflow.funnel.compute import (
    STEPS,
    CompanyJourney,
    compute_funnel,
    percentile,
    progress,
)
from codat_authflow.storage.codec import HistoryEntry
from codat_authflow.storage.companies import CompanyStore
from codat_authflow.storage.funnel import (
    cohort,
    connection_failures,
    first_seen_key,
    load_journeys,
    rebuild_index,
    redirect_failures,
)
from codat_authflow.storage.keys import Keys
from state_machine import CompanyFacts, apply_events, parse_codat_event
from tests.support.lifecycles import LIFECYCLES, Lifecycle, build, new_connection

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def stamp(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry(from_state: str, to_state: str, at: float, event_type: str = "x") -> HistoryEntry:
    return HistoryEntry(
        from_state=from_state,
        to_state=to_state,
        at=stamp(at + 0.5),  # our commit, a little later than the event
        event_id=f"e-{from_state}-{to_state}-{at}",
        event_type=event_type,
        generated_at=stamp(at),
    )


def journey(*path: tuple[str, float], state: str | None = None, **kwargs) -> CompanyJourney:
    """A company created at 0 that went through `path` [(state, at), ...]."""
    history, current = [], "created"
    for to_state, at in path:
        history.append(entry(current, to_state, at))
        current = to_state
    return CompanyJourney(
        company_id=kwargs.pop("company_id", "c"),
        first_seen_at=stamp(0),
        state=state or current,
        history=tuple(history),
        **kwargs,
    )


def counts(funnel) -> dict[str, int]:
    return {s.step: s.companies for s in funnel.steps}


# -- pure ------------------------------------------------------------------------


def test_an_empty_cohort_has_zero_everywhere_and_no_ratio():
    funnel = compute_funnel([])
    assert funnel.companies == 0
    assert counts(funnel) == dict.fromkeys(STEPS, 0)
    assert all(s.conversion_from_previous is None for s in funnel.steps)
    assert all(t.samples == 0 and t.median_seconds is None for t in funnel.timings)
    assert funnel.revoked == 0


def test_the_full_path_counts_every_step_and_times_each_pair():
    funnel = compute_funnel(
        [journey(("linking", 60), ("linked", 180), ("syncing", 200), ("ready", 780))]
    )
    assert counts(funnel) == {"created": 1, "linking": 1, "linked": 1, "ready": 1}
    assert [s.skipped for s in funnel.steps] == [0, 0, 0, 0]
    assert funnel.timing("created", "linking").median_seconds == 60
    assert funnel.timing("linking", "linked").median_seconds == 120
    assert funnel.timing("linked", "ready").median_seconds == 600  # syncing included
    assert funnel.timing("created", "ready").median_seconds == 780


def test_conversion_per_step_and_from_the_start():
    funnel = compute_funnel(
        [
            journey(company_id="a"),
            journey(("linking", 10), company_id="b"),
            journey(("linking", 10), ("linked", 20), company_id="c"),
            journey(("linking", 10), ("linked", 20), ("ready", 30), company_id="d"),
        ]
    )
    assert counts(funnel) == {"created": 4, "linking": 3, "linked": 2, "ready": 1}
    linked = funnel.step("linked")
    assert linked.conversion_from_previous == pytest.approx(2 / 3, abs=1e-4)
    assert linked.conversion_from_start == 0.5
    assert funnel.step("created").conversion_from_previous is None
    assert funnel.step("created").conversion_from_start == 1.0


def test_a_company_that_skipped_linking_and_linked_still_counts_for_them():
    # linking -> ready in one go: Codat's read.completed.initial came before connected.
    funnel = compute_funnel([journey(("linking", 10), ("ready", 50))])
    assert counts(funnel) == {"created": 1, "linking": 1, "linked": 1, "ready": 1}
    assert funnel.step("linked").skipped == 1
    assert funnel.step("linking").skipped == 0
    # No invented duration for the pairs around the skipped step...
    assert funnel.timing("linking", "linked").samples == 0
    assert funnel.timing("linked", "ready").samples == 0
    # ...but the ends are known.
    assert funnel.timing("created", "linking").median_seconds == 10
    assert funnel.timing("created", "ready").median_seconds == 50


def test_a_company_that_went_straight_from_created_to_linked():
    funnel = compute_funnel([journey(("linked", 30))])
    assert counts(funnel) == {"created": 1, "linking": 1, "linked": 1, "ready": 0}
    assert funnel.step("linking").skipped == 1
    assert funnel.timing("created", "linking").samples == 0
    assert funnel.timing("linking", "linked").samples == 0


def test_syncing_without_linked_counts_as_linked():
    funnel = compute_funnel([journey(("linking", 5), ("syncing", 9))])
    assert counts(funnel) == {"created": 1, "linking": 1, "linked": 1, "ready": 0}
    assert funnel.step("linked").skipped == 1


def test_revoked_companies_keep_the_steps_they_reached_and_are_counted_apart():
    funnel = compute_funnel(
        [
            journey(("linking", 5), ("linked", 9), ("ready", 20), ("revoked", 99), company_id="a"),
            journey(("revoked", 3), company_id="b"),  # company.deleted before anything
            journey(("linking", 5), ("linked", 9), ("revoked", 50), company_id="c"),
        ]
    )
    assert counts(funnel) == {"created": 3, "linking": 2, "linked": 2, "ready": 1}
    assert funnel.revoked == 3
    assert funnel.revoked_from == {"created": 1, "linked": 1, "ready": 1}
    assert funnel.current_states["revoked"] == 3


def test_revoked_then_relinked_counts_once_and_times_the_first_visit():
    funnel = compute_funnel(
        [journey(("linking", 5), ("linked", 9), ("revoked", 20), ("linked", 40), ("ready", 60))]
    )
    assert counts(funnel)["ready"] == 1
    assert funnel.revoked == 1
    assert funnel.timing("linking", "linked").median_seconds == 4  # the first time
    assert funnel.timing("linked", "ready").median_seconds == 51


def test_history_truncated_by_its_bound_still_counts_the_states_it_left_from():
    # The oldest entries fell out of the bounded history: only linked -> syncing is left,
    # and the company was ready once (first_ready_at), now syncing again.
    truncated = CompanyJourney(
        company_id="t",
        first_seen_at=stamp(0),
        state="syncing",
        history=(entry("linked", "syncing", 500),),
        first_ready_at=stamp(400),
    )
    funnel = compute_funnel([truncated])
    assert counts(funnel) == {"created": 1, "linking": 1, "linked": 1, "ready": 1}
    assert funnel.timing("created", "ready").samples == 0  # its time fell out too


def test_created_time_is_codats_company_created_time_when_known():
    j = journey(("linking", 100), created_at=stamp(40))
    assert progress(j).observed["created"] == (T0 + timedelta(seconds=40)).timestamp()
    assert compute_funnel([j]).timing("created", "linking").median_seconds == 60


def test_an_event_generated_before_the_previous_step_gives_zero_not_a_negative_time():
    j = CompanyJourney(
        company_id="n",
        first_seen_at=stamp(100),
        state="linking",
        history=(entry("created", "linking", 50),),
    )
    assert compute_funnel([j]).timing("created", "linking").median_seconds == 0


def test_median_and_90th_percentile_over_many_companies():
    journeys = [journey(("linking", s), company_id=str(s)) for s in range(1, 11)]
    timing = compute_funnel(journeys).timing("created", "linking")
    assert timing.samples == 10
    assert timing.median_seconds == 5.5
    assert timing.p90_seconds == pytest.approx(9.1)


def test_percentile_interpolates_like_numpy():
    assert percentile([], 50) is None
    assert percentile([7], 90) == 7
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([4, 1, 3, 2], 0) == 1 and percentile([4, 1, 3, 2], 100) == 4
    assert percentile([10, 20], 90) == 19


def test_source_type_filter_keeps_companies_with_such_a_connection():
    journeys = [
        journey(("linking", 1), company_id="a", source_types=frozenset({"Accounting"})),
        journey(("linking", 1), company_id="b", source_types=frozenset({"Banking"})),
        journey(("linking", 1), company_id="c", source_types=frozenset({"Banking", "Accounting"})),
        journey(company_id="d"),  # never picked a platform: no source type
    ]
    assert compute_funnel(journeys, source_type="banking").companies == 2
    assert compute_funnel(journeys, source_type="Accounting").companies == 2
    assert compute_funnel(journeys).companies == 4
    assert compute_funnel(journeys).source_types == {"Accounting": 2, "Banking": 2, "none": 1}


def test_top_failure_reasons_are_counted_and_ordered():
    journeys = [
        journey(company_id="a", connection_failures=("Invalid credentials", "Timeout")),
        journey(company_id="b", connection_failures=("Invalid credentials",)),
        journey(
            company_id="c",
            redirect_failures=(("cancelled", "User cancelled"), ("error", "statusCode 500")),
        ),
        journey(company_id="d", redirect_failures=(("cancelled", "User cancelled"),)),
    ]
    funnel = compute_funnel(journeys, top=5)
    assert funnel.connection_failures == (("Invalid credentials", 2), ("Timeout", 1))
    assert funnel.redirect_failures == (
        ("cancelled", "User cancelled", 2),
        ("error", "statusCode 500", 1),
    )
    assert len(compute_funnel(journeys, top=1).connection_failures) == 1


def test_the_json_view_names_everything():
    data = compute_funnel([journey(("linking", 1), ("ready", 2))]).to_json()
    assert [s["step"] for s in data["steps"]] == list(STEPS)
    assert {"conversionFromPrevious", "conversionFromStart", "skipped"} <= set(data["steps"][1])
    assert data["timings"][0] == {
        "from": "created",
        "to": "linking",
        "samples": 1,
        "medianSeconds": 1.0,
        "p90Seconds": 1.0,
    }
    assert data["revoked"] == {"companies": 0, "fromState": {}}


# -- through the real state machine: every documented lifecycle ------------------


def replayed_journey(kind: str, order=None) -> tuple[CompanyJourney, str]:
    life, expected = build(kind)
    events = [parse_codat_event(body) for body in life.events]
    if order is not None:
        events = [events[i] for i in order(len(events))]
    facts, history = CompanyFacts(company_id=life.company_id), []
    for n, event in enumerate(events):  # one webhook at a time, as the drain may
        outcome = apply_events(facts, [event])
        history += [HistoryEntry.of(t, stamp(n)) for t in outcome.transitions]
        facts = outcome.facts
    return (
        CompanyJourney(
            company_id=life.company_id,
            first_seen_at=stamp(0),
            state=outcome.state.value,
            history=tuple(history),
            created_at=facts.created_at,
            source_types=frozenset(c.source_type for c in facts.connections if c.source_type),
        ),
        expected,
    )


# Lifecycles that were ready, then revoked, before their final state: the funnel
# keeps every step they reached and counts them as revoked.
READY_THEN_REVOKED = {
    "reconnected",
    "new_platform_after_delete",
    "new_platform_synced_after_delete",
}


@pytest.mark.parametrize("kind", sorted(LIFECYCLES))
def test_every_lifecycle_reaches_the_steps_its_final_state_implies(kind):
    j, expected = replayed_journey(kind)
    funnel = compute_funnel([j])
    reached = {s.step for s in funnel.steps if s.companies}
    assert "created" in reached and "linking" in reached  # all of them started linking
    if expected == "ready":
        assert reached == set(STEPS)
        assert funnel.timing("created", "ready").samples == 1
    if expected in ("linked", "syncing"):
        before = set(STEPS) if kind in READY_THEN_REVOKED else {"created", "linking", "linked"}
        assert reached == before
    assert funnel.revoked == (expected == "revoked" or kind in READY_THEN_REVOKED)


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(sorted(LIFECYCLES)), seed=st.randoms(use_true_random=False))
def test_any_arrival_order_gives_a_consistent_funnel(kind, seed):
    """Events arrive in any order (Codat does not promise one): steps never grow
    along the funnel, a skipped step is still reached, timings are never negative."""

    def shuffled(n):
        order = list(range(n))
        seed.shuffle(order)
        return order

    j, _ = replayed_journey(kind, shuffled)
    funnel = compute_funnel([j])
    numbers = [s.companies for s in funnel.steps]
    assert numbers == sorted(numbers, reverse=True)
    assert all(s.skipped <= s.companies for s in funnel.steps)
    assert all(t.median_seconds is None or t.median_seconds >= 0 for t in funnel.timings)
    final_rank = {"created": 0, "linking": 1, "linked": 2, "syncing": 2, "ready": 3}
    if j.state in final_rank:  # a company is counted at least up to where it is now
        assert numbers[final_rank[j.state]] == 1


# -- the index and loading (codat_authflow.storage.funnel) --------------------------------------


@pytest.fixture
def redis():
    return fakeredis.FakeRedis()


def apply_lifecycle(store: CompanyStore, life: Lifecycle, at: float) -> None:
    for n, body in enumerate(life.events):
        event = parse_codat_event(body)
        CompanyUpdates(store).apply({life.company_id: [event]}, now=lambda n=n: stamp(at + n))


def test_new_companies_are_indexed_by_first_seen_time_in_the_same_commit(redis):
    store = CompanyStore(redis, Keys())
    early, late = build("happy_path")[0], build("failed_only")[0]
    apply_lifecycle(store, early, 0)
    apply_lifecycle(store, late, 3600)
    assert redis.zscore(first_seen_key(Keys()), early.company_id) == T0.timestamp()
    since, until = T0.timestamp(), T0.timestamp() + 3600
    assert cohort(redis, Keys(), since, until) == [early.company_id]  # `until` excluded
    assert set(cohort(redis, Keys(), since, until + 1)) == {early.company_id, late.company_id}


def test_loaded_journeys_carry_history_source_types_and_failure_reasons(redis):
    store = CompanyStore(redis, Keys())
    life = Lifecycle()
    first, second = new_connection(), new_connection("Banking")
    life.company("company.created")
    life.connection("connection.created", first)
    failed = life.connection("connection.failed", first)
    failed["payload"]["connection"]["dataConnectionErrors"] = [
        {"statusCode": "401", "statusText": "Unauthorized", "errorMessage": "Bad password"}
    ]
    life.connection("connection.created", second)
    life.connection("connection.connected", second)
    apply_lifecycle(store, life, 0)
    # A duplicate delivery of the failure is applied (and logged) again: counted once.
    CompanyUpdates(store).apply(
        {life.company_id: [parse_codat_event(failed)]}, now=lambda: stamp(99)
    )
    redis.hset(
        f"authflow:link:outcomes:{life.company_id}",
        mapping={
            first.id: json.dumps(
                {"outcome": "cancelled", "reported": {"statusCode": 403, "statusText": None}}
            ),
            second.id: json.dumps({"outcome": "connected", "reported": {"statusCode": 200}}),
        },
    )
    [loaded] = load_journeys(redis, Keys(), [life.company_id, "unknown-company"])
    assert loaded.state == "linked"
    assert loaded.source_types == {"Accounting", "Banking"}
    assert loaded.connection_failures == ("Bad password",)
    assert loaded.redirect_failures == (("cancelled", "statusCode 403"),)
    assert [h.to_state for h in loaded.history] == ["linking", "linked"]
    funnel = compute_funnel([loaded])
    assert counts(funnel) == {"created": 1, "linking": 1, "linked": 1, "ready": 0}
    assert funnel.connection_failures == (("Bad password", 1),)


def test_failure_reason_falls_back_from_message_to_text_to_code():
    def logged(errors, event_id="e"):
        return {"id": event_id, "type": "connection.failed", "connection": {"errors": errors}}

    assert connection_failures([logged([["500", "Server Error", None, None]])]) == ("Server Error",)
    assert connection_failures([logged([["500", None, None, None]])]) == ("500",)
    assert connection_failures([logged(None)]) == ("no reason given",)
    assert connection_failures([{"type": "other"}, logged(None, "a"), logged(None, "a")]) == (
        "no reason given",
    )
    assert redirect_failures({b"x": b"{bad"}) == ()


def test_rebuild_index_adds_companies_stored_before_it_existed(redis):
    store = CompanyStore(redis, Keys())
    lives = [build("happy_path")[0] for _ in range(3)]
    for n, life in enumerate(lives):
        apply_lifecycle(store, life, n * 10)
    redis.delete(first_seen_key(Keys()))
    redis.zadd(first_seen_key(Keys()), {lives[0].company_id: 1.0})  # already there: kept
    assert rebuild_index(redis, Keys()) == 2
    assert redis.zscore(first_seen_key(Keys()), lives[0].company_id) == 1.0
    assert redis.zscore(first_seen_key(Keys()), lives[2].company_id) == (T0.timestamp() + 20)
