"""The authorization funnel, computed from stored transitions. Pure: company
journeys in, numbers out; nothing here reads Redis (`codat_authflow.storage.funnel` loads
the journeys).

Definitions (docs/operations.md repeats them):

* Cohort: the companies first seen in the period (our record of the company
  was created then), optionally only those with a connection of a given
  `sourceType`. Each is followed to now, so a company created on the last day
  of the period and linked the day after counts as linked.
* Steps: created -> linking -> linked -> ready. A company has *reached* a step
  when its history shows it at that step or any later one (`syncing` comes
  between linked and ready). So a company that went linking -> ready in one
  go (Codat's read arrived before its `connection.connected`) has reached
  linked too: counts never lose a company that skipped a state. `revoked` is
  not a step: a company revoked after linking has still reached linked, and
  revocations are counted apart.
* Skipped: reached, but never observed in that exact state.
* Times between steps use the timestamps of the events that caused the
  transitions (Codat's `generatedDate`, or ours for synthetic events), so a
  backlog in our inbox does not distort them; "created" is the
  `company.created` event's time, or when we first saw the company. Only
  companies observed at both ends of a step pair give a sample: a skipped
  step gives no made-up duration. Percentiles interpolate linearly between
  the two nearest samples (numpy's default).
* Conversion: companies reaching a step over those reaching the previous one
  (and over the cohort).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from state_machine.events import timestamp_seconds

STEPS = ("created", "linking", "linked", "ready")
RANK = {"created": 0, "linking": 1, "linked": 2, "syncing": 3, "ready": 4}
STEP_PAIRS = (("created", "linking"), ("linking", "linked"), ("linked", "ready"))
OVERALL = ("created", "ready")
REVOKED = "revoked"
TOP_REASONS = 10


class Transition(Protocol):
    """A stored transition (`storage.codec.HistoryEntry` has these); the
    funnel reads nothing else of a company's history."""

    @property
    def from_state(self) -> str: ...
    @property
    def to_state(self) -> str: ...
    @property
    def generated_at(self) -> str: ...


@dataclass(frozen=True)
class CompanyJourney:
    """What the funnel needs to know about one company."""

    company_id: str
    first_seen_at: str  # when we first saw it (our clock)
    state: str
    history: tuple[Transition, ...] = ()
    created_at: str | None = None  # Codat's company.created generatedDate
    first_ready_at: str | None = None  # kept apart from the bounded history
    source_types: frozenset[str] = frozenset()
    connection_failures: tuple[str, ...] = ()  # a reason per connection.failed event
    redirect_failures: tuple[tuple[str, str], ...] = ()  # (outcome, reason) per failed redirect


@dataclass(frozen=True)
class Progress:
    """One company's way through the funnel."""

    reached: int  # the furthest RANK reached
    observed: dict[str, float]  # step -> epoch seconds it was first observed in that step
    revoked_from: str | None  # the state it was in when first revoked, if ever

    def reached_step(self, step: str) -> bool:
        return self.reached >= RANK[step]


def epoch(stamp: str | None) -> float | None:
    """Epoch seconds of a stored stamp; None for one that cannot be read (an
    odd date stored before timestamps were checked), which is then skipped."""
    return timestamp_seconds(stamp)


def progress(journey: CompanyJourney) -> Progress:
    ranks = [RANK.get(journey.state, 0)]
    if journey.first_ready_at is not None:
        ranks.append(RANK["ready"])
    observed: dict[str, float] = {}
    created = epoch(journey.created_at or journey.first_seen_at)
    if created is not None:
        observed["created"] = created
    revoked_from = None
    for entry in journey.history:
        ranks += [RANK.get(entry.from_state, 0), RANK.get(entry.to_state, 0)]
        if entry.to_state in STEPS and entry.to_state not in observed:
            at = epoch(entry.generated_at)
            if at is not None:
                observed[entry.to_state] = at
        if entry.to_state == REVOKED and revoked_from is None:
            revoked_from = entry.from_state
    if revoked_from is None and journey.state == REVOKED:
        revoked_from = "unknown"  # its revocation fell out of the bounded history
    return Progress(reached=max(ranks), observed=observed, revoked_from=revoked_from)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100), linear between closest ranks; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class Step:
    step: str
    companies: int
    skipped: int
    conversion_from_previous: float | None
    conversion_from_start: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "companies": self.companies,
            "skipped": self.skipped,
            "conversionFromPrevious": self.conversion_from_previous,
            "conversionFromStart": self.conversion_from_start,
        }


@dataclass(frozen=True)
class Timing:
    from_step: str
    to_step: str
    samples: int
    median_seconds: float | None
    p90_seconds: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "from": self.from_step,
            "to": self.to_step,
            "samples": self.samples,
            "medianSeconds": _round(self.median_seconds),
            "p90Seconds": _round(self.p90_seconds),
        }


@dataclass(frozen=True)
class Funnel:
    companies: int
    steps: tuple[Step, ...]
    timings: tuple[Timing, ...]
    revoked: int
    revoked_from: dict[str, int]
    current_states: dict[str, int]
    connection_failures: tuple[tuple[str, int], ...]
    redirect_failures: tuple[tuple[str, str, int], ...]
    source_types: dict[str, int] = field(default_factory=dict)

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.step == name)

    def timing(self, from_step: str, to_step: str) -> Timing:
        return next(t for t in self.timings if (t.from_step, t.to_step) == (from_step, to_step))

    def to_json(self) -> dict[str, Any]:
        return {
            "companies": self.companies,
            "steps": [s.to_json() for s in self.steps],
            "timings": [t.to_json() for t in self.timings],
            "revoked": {"companies": self.revoked, "fromState": self.revoked_from},
            "currentStates": self.current_states,
            "sourceTypes": self.source_types,
            "topConnectionFailures": [
                {"reason": reason, "count": count} for reason, count in self.connection_failures
            ],
            "topRedirectFailures": [
                {"outcome": outcome, "reason": reason, "count": count}
                for outcome, reason, count in self.redirect_failures
            ],
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _ratio(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def matches_source_type(journey: CompanyJourney, source_type: str | None) -> bool:
    if not source_type:
        return True
    wanted = source_type.strip().lower()
    return any(s.lower() == wanted for s in journey.source_types)


def compute_funnel(
    journeys: Iterable[CompanyJourney], *, source_type: str | None = None, top: int = TOP_REASONS
) -> Funnel:
    reached = dict.fromkeys(STEPS, 0)
    skipped = dict.fromkeys(STEPS, 0)
    durations: dict[tuple[str, str], list[float]] = {p: [] for p in (*STEP_PAIRS, OVERALL)}
    revoked, revoked_from = 0, Counter[str]()
    current, sources = Counter[str](), Counter[str]()
    connection_failures = Counter[str]()
    redirect_failures = Counter[tuple[str, str]]()
    companies = 0

    for journey in journeys:
        if not matches_source_type(journey, source_type):
            continue
        companies += 1
        current[journey.state] += 1
        sources.update(journey.source_types or {"none"})
        p = progress(journey)
        for step in STEPS:
            if p.reached_step(step):
                reached[step] += 1
                skipped[step] += step not in p.observed
        for pair in durations:
            start, end = (p.observed.get(s) for s in pair)
            if start is not None and end is not None:
                durations[pair].append(max(0.0, end - start))
        if p.revoked_from is not None:
            revoked += 1
            revoked_from[p.revoked_from] += 1
        connection_failures.update(journey.connection_failures)
        redirect_failures.update(journey.redirect_failures)

    steps, previous = [], None
    for step in STEPS:
        steps.append(
            Step(
                step=step,
                companies=reached[step],
                skipped=skipped[step],
                conversion_from_previous=None
                if previous is None
                else _ratio(reached[step], previous),
                conversion_from_start=_ratio(reached[step], reached["created"]),
            )
        )
        previous = reached[step]
    timings = tuple(
        Timing(a, b, len(values), percentile(values, 50), percentile(values, 90))
        for (a, b), values in durations.items()
    )
    return Funnel(
        companies=companies,
        steps=tuple(steps),
        timings=timings,
        revoked=revoked,
        revoked_from=dict(sorted(revoked_from.items())),
        current_states={s: current.get(s, 0) for s in (*RANK, REVOKED)},
        connection_failures=tuple(_top(connection_failures, top)),
        redirect_failures=tuple(
            (outcome, reason, count) for (outcome, reason), count in _top(redirect_failures, top)
        ),
        source_types=dict(sorted(sources.items())),
    )


def _top(counter: Counter, n: int) -> list:
    return sorted(counter.items(), key=lambda item: (-item[1], item[0]))[:n]
