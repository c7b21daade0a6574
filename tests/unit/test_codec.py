"""Company records written by an earlier version still read, with the meaning they had."""

from __future__ import annotations

import json
import zlib
from datetime import UTC, datetime

from codat_authflow.storage.codec import (
    LEGACY_DATA_TYPE,
    decode_record,
    encode_record,
    event_from_log,
)
from state_machine import CompanyState, apply_events, derive_state, parse_codat_event
from state_machine.notifications import notifications_for
from tests.support.lifecycles import Connection, Lifecycle

COMPANY = "7c1b3c2e-1111-4aaa-8bbb-000000000001"
CONNECTION = "9d2e4f60-2222-4ccc-8ddd-000000000002"

# A version 1 document (no "v"), as the previous release stored a company
# that had synced: reads were company-wide, the event log kept bare ids.
V1 = {
    "state": "ready",
    "facts": {
        "companyId": COMPANY,
        "name": "Toft stores",
        "connections": [
            {
                "id": CONNECTION,
                "status": "Linked",
                "statusKey": ["2026-01-05T09:00:14.000000Z", 1, "e2"],
                "everLinked": True,
                "sourceType": "Accounting",
                "platformKey": "gbol",
                "platformName": "Xero",
            }
        ],
        "createdAt": "2026-01-05T09:00:00.000000Z",
        "syncStartedAt": "2026-01-05T09:00:21.000000Z",
        "initialSyncCompletedAt": "2026-01-05T09:00:28.000000Z",
    },
    "history": [],
    "firstSeenAt": "2026-01-05T09:00:01.000000Z",
    "updatedAt": "2026-01-05T09:00:29.000000Z",
    "firstReadyAt": "2026-01-05T09:00:29.000000Z",
    "events": [
        {
            "id": "e3",
            "type": "read.completed.initial",
            "at": "2026-01-05T09:00:28.000000Z",
            "appliedAt": "2026-01-05T09:00:29.000000Z",
            "reads": [CONNECTION],
        }
    ],
}


def test_a_version_1_record_keeps_its_state_and_is_written_back_as_version_2():
    record = decode_record(json.dumps(V1).encode())
    assert record.state == CompanyState.READY
    assert derive_state(record.facts) == CompanyState.READY  # same meaning under the new rules
    (connection,) = record.facts.connections
    (legacy,) = connection.data_types
    assert legacy.data_type == LEGACY_DATA_TYPE and legacy.complete
    assert record.facts.initial_sync_completed_at == "2026-01-05T09:00:28.000000Z"
    assert record.ready_connections == frozenset({CONNECTION})

    raw = encode_record(record)
    assert decode_record(raw) == record
    assert json.loads(zlib.decompress(raw))["v"] == 2


def test_a_version_1_event_log_replays_to_a_complete_read():
    event, applied_at = event_from_log(V1["events"][0], COMPANY)
    assert applied_at == "2026-01-05T09:00:29.000000Z"
    assert [(r.connection_id, r.data_type, r.status) for r in event.data_types] == [
        (CONNECTION, LEGACY_DATA_TYPE, "Complete")
    ]


def test_an_upgraded_company_that_reconnects_is_not_announced_ready_again():
    record = decode_record(json.dumps(V1).encode())
    # Later than every fact of V1.
    life = Lifecycle(company_id=COMPANY, start=datetime(2026, 2, 1, tzinfo=UTC))
    connection = Connection(CONNECTION)
    life.connection("connection.disconnected", connection, status="Deauthorized")
    life.connection("connection.reconnected", connection)
    events = [parse_codat_event(b) for b in life.events]
    outcome = apply_events(record.facts, events)
    assert [t.to_state for t in outcome.transitions] == [CompanyState.REVOKED, CompanyState.READY]
    notes = notifications_for(outcome, ready_before=record.ready_connections)
    assert [n.type for n in notes if n.type == "company.ready"] == []
