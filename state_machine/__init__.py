"""The pure domain: Codat events in, company facts, state and transitions out.

Nothing here touches Redis, Flask or the network. Everything is plain data
(frozen dataclasses) and functions over it, so the rules can be tested
exhaustively and the same function serves webhooks, API calls and
reconciliation.
"""

from state_machine.company import (
    CompanyState,
    Outcome,
    Step,
    Transition,
    apply_event,
    apply_events,
    derive_state,
)
from state_machine.events import (
    HANDLED_EVENT_TYPES,
    CodatEvent,
    ConnectionSnapshot,
    DataConnectionError,
    DataTypeRead,
    InvalidEvent,
    ReadIssue,
    parse_codat_event,
    unknown_values,
)
from state_machine.facts import (
    CompanyFacts,
    ConnectionFacts,
    DataTypeFacts,
    LastError,
    merge_event,
)
from state_machine.readiness import ANY_DATA, Readiness, ReadinessGate, assess

__all__ = [
    "ANY_DATA",
    "HANDLED_EVENT_TYPES",
    "CodatEvent",
    "CompanyFacts",
    "CompanyState",
    "ConnectionFacts",
    "ConnectionSnapshot",
    "DataConnectionError",
    "DataTypeFacts",
    "DataTypeRead",
    "InvalidEvent",
    "LastError",
    "Outcome",
    "ReadIssue",
    "Readiness",
    "ReadinessGate",
    "Step",
    "Transition",
    "apply_event",
    "apply_events",
    "assess",
    "derive_state",
    "merge_event",
    "parse_codat_event",
    "unknown_values",
]
