"""A company's state, derived from its facts, and the transitions an observer sees.

The facts (`state_machine.facts`) are merged commutatively, so the state is a
pure function of the set of events received, whatever their order or
repetition. `derive_state` is that function:

* `revoked`: the company was deleted, or every connection that was ever
  linked is gone (unlinked, deauthorized, deleted, or in a status we do not
  know, which is never taken as linked);
* `ready`: the readiness gate is met (`state_machine.readiness`);
* `syncing`: a connection is linked and some of its reads completed (including
  an initial sync that only failed: it stays here, and is notified);
* `linked`: a connection is linked, nothing read yet;
* `linking`: a connection waits for the user (`PendingAuth`);
* `created`: nothing else.

Transitions are what an observer sees while events arrive: folding one event
at a time, every change of derived state is reported with its cause, and
every event's step (facts before and after) is kept for the notifications.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from state_machine.events import CodatEvent
from state_machine.facts import CompanyFacts, merge_event
from state_machine.readiness import ANY_DATA, ReadinessGate, assess


class CompanyState(StrEnum):
    CREATED = "created"
    LINKING = "linking"
    LINKED = "linked"
    SYNCING = "syncing"
    READY = "ready"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class Transition:
    from_state: CompanyState
    to_state: CompanyState
    cause_event_id: str
    cause_event_type: str
    cause_generated_at: str
    synthetic: bool = False


@dataclass(frozen=True, slots=True)
class Step:
    """One event folded in: the facts and state just before and just after."""

    event: CodatEvent
    before: CompanyFacts
    after: CompanyFacts
    state_before: CompanyState
    state_after: CompanyState

    @property
    def news(self) -> bool:
        return self.after != self.before


@dataclass(frozen=True, slots=True)
class Outcome:
    facts: CompanyFacts
    state: CompanyState
    transitions: tuple[Transition, ...] = field(default=())
    steps: tuple[Step, ...] = field(default=(), compare=False)
    gate: ReadinessGate = field(default=ANY_DATA, compare=False)


def derive_state(facts: CompanyFacts, gate: ReadinessGate = ANY_DATA) -> CompanyState:
    """The company's state is a function of its facts (and the gate) alone."""
    if facts.deleted_at is not None:
        return CompanyState.REVOKED
    linked = [c for c in facts.connections if c.is_linked]
    if linked:
        if assess(facts, gate).met:
            return CompanyState.READY
        if any(c.data_types for c in linked):
            return CompanyState.SYNCING
        return CompanyState.LINKED
    if any(c.ever_linked for c in facts.connections):
        return CompanyState.REVOKED
    if any(c.is_pending for c in facts.connections):
        return CompanyState.LINKING
    return CompanyState.CREATED


def apply_events(
    facts: CompanyFacts,
    events: Iterable[CodatEvent],
    gate: ReadinessGate = ANY_DATA,
    *,
    start: CompanyState | None = None,
) -> Outcome:
    """Fold events into the facts one by one, reporting every state change.

    `start` is the state the company was last stored in, when it may differ
    from what its facts give today (the readiness gate was changed): the first
    event then reports the move from it."""
    state = derive_state(facts, gate) if start is None else start
    transitions: list[Transition] = []
    steps: list[Step] = []
    for event in events:
        merged = merge_event(facts, event)
        new_state = derive_state(merged, gate)
        steps.append(Step(event, facts, merged, state, new_state))
        if new_state != state:
            transitions.append(
                Transition(
                    from_state=state,
                    to_state=new_state,
                    cause_event_id=event.id,
                    cause_event_type=event.type,
                    cause_generated_at=event.generated_at,
                    synthetic=event.synthetic,
                )
            )
        facts, state = merged, new_state
    return Outcome(
        facts=facts, state=state, transitions=tuple(transitions), steps=tuple(steps), gate=gate
    )


def apply_event(facts: CompanyFacts, event: CodatEvent, gate: ReadinessGate = ANY_DATA) -> Outcome:
    return apply_events(facts, (event,), gate)
