"""The pure domain: Codat events in, company facts, state and transitions out.

Nothing here touches Redis, Flask or the network. Everything is plain data
(frozen dataclasses) and functions over it, so the rules can be tested
exhaustively and the same function serves webhooks, API calls and
reconciliation.
"""

from state_machine.company import (
    CompanyFacts,
    CompanyState,
    ConnectionFacts,
    LastError,
    Outcome,
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
    InvalidEvent,
    parse_codat_event,
)

__all__ = [
    "HANDLED_EVENT_TYPES",
    "CodatEvent",
    "CompanyFacts",
    "CompanyState",
    "ConnectionFacts",
    "ConnectionSnapshot",
    "DataConnectionError",
    "InvalidEvent",
    "LastError",
    "Outcome",
    "Transition",
    "apply_event",
    "apply_events",
    "derive_state",
    "parse_codat_event",
]
