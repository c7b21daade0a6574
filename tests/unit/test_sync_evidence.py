"""What pull operations and data statuses prove about the initial sync."""

from __future__ import annotations

import copy
import json
from functools import cache

from codat_authflow.journey.sync_evidence import (
    from_data_status,
    from_pull_operations,
    needs_data_status,
)
from tests.support.processes import REPO_ROOT

A, B = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"
OBSERVED = "2026-11-28T00:00:00.000000Z"


@cache
def _spec():
    return json.loads((REPO_ROOT / "tests" / "data" / "Codat-Platform.json").read_text())


def pull(connection_id, data_type, status, requested, completed=None):
    """Codat's PullOperation example, adjusted."""
    example = _spec()["paths"]["/companies/{companyId}/data/history"]["get"]["responses"]["200"][
        "content"
    ]["application/json"]["examples"]["Example"]["value"]["results"][0]
    op = copy.deepcopy(example)
    op.update(connectionId=connection_id, dataType=data_type, status=status, requested=requested)
    if completed:
        op["completed"] = completed
    op["isCompleted"] = status == "Complete"
    return op


def reads(evidence):
    return [(r.connection_id, r.data_type, r.status, r.initial, r.at) for r in evidence.reads]


def test_each_data_types_first_final_fetch_is_its_initial_read():
    ops = [
        pull(A, "invoices", "Complete", "2026-01-05T09:00:00Z", "2026-01-05T09:02:00Z"),
        pull(A, "bills", "FetchError", "2026-01-05T09:00:01Z", "2026-01-05T09:03:00Z"),
        pull(A, "customers", "NotSupported", "2026-01-05T09:00:02Z"),
    ]
    evidence = from_pull_operations(ops, [A])
    assert sorted(reads(evidence)) == [
        (A, "bills", "FetchError", True, "2026-01-05T09:03:00.000000Z"),
        (A, "customers", "NotSupported", True, "2026-01-05T09:00:02.000000Z"),
        (A, "invoices", "Complete", True, "2026-01-05T09:02:00.000000Z"),
    ]
    assert evidence.basis == "pull-operations"


def test_a_fetch_still_running_is_not_a_read():
    ops = [
        pull(A, "invoices", "Complete", "2026-01-05T09:00:00Z", "2026-01-05T09:02:00Z"),
        pull(A, "bills", "Fetching", "2026-01-05T09:00:01Z"),
    ]
    assert [r[1] for r in reads(from_pull_operations(ops, [A]))] == ["invoices"]


def test_a_failed_first_fetch_then_a_complete_one_are_both_initial_and_the_latest_counts():
    ops = [
        pull(A, "invoices", "FetchError", "2026-01-05T09:00:00Z", "2026-01-05T09:01:00Z"),
        pull(A, "invoices", "Complete", "2026-01-06T09:00:00Z", "2026-01-06T09:01:00Z"),
        pull(A, "invoices", "AuthError", "2026-01-07T09:00:00Z", "2026-01-07T09:01:00Z"),
    ]
    assert reads(from_pull_operations(ops, [A])) == [
        (A, "invoices", "FetchError", True, "2026-01-05T09:01:00.000000Z"),
        (A, "invoices", "Complete", True, "2026-01-06T09:01:00.000000Z"),
        (A, "invoices", "AuthError", False, "2026-01-07T09:01:00.000000Z"),
    ]


def test_a_refresh_running_later_does_not_hide_a_finished_initial_read():
    ops = [
        pull(A, "invoices", "Complete", "2026-01-05T09:00:00Z", "2026-01-05T09:02:00Z"),
        pull(A, "invoices", "Queued", "2026-01-06T09:00:00Z"),
    ]
    assert reads(from_pull_operations(ops, [A])) == [
        (A, "invoices", "Complete", True, "2026-01-05T09:02:00.000000Z")
    ]


def test_only_linked_connections_count():
    ops = [pull(B, "invoices", "Complete", "2026-01-05T09:00:00Z", "2026-01-05T09:02:00Z")]
    evidence = from_pull_operations(ops, [A])
    assert not evidence.found and needs_data_status(evidence)


def test_fetches_all_running_say_nothing_yet_and_need_no_fallback():
    evidence = from_pull_operations([pull(A, "invoices", "Initial", "2026-01-05T09:00:00Z")], [A])
    assert not evidence.found and not needs_data_status(evidence)


def _statuses():
    return copy.deepcopy(
        _spec()["paths"]["/companies/{companyId}/dataStatus"]["get"]["responses"]["200"]["content"][
            "application/json"
        ]["examples"]["Example"]["value"]
    )


def test_the_specs_data_status_example_proves_a_complete_initial_read_of_the_linked_one():
    statuses = _statuses()
    evidence = from_data_status(statuses, [A], observed_at=OBSERVED)
    assert len(reads(evidence)) == len(statuses)
    assert (A, "invoices", "Complete", True, "2022-01-01T00:00:00.000000Z") in reads(evidence)
    assert evidence.basis == "data-status"


def test_data_status_names_no_connection_so_it_proves_nothing_with_two_linked():
    assert not from_data_status(_statuses(), [A, B], observed_at=OBSERVED).found


def test_a_data_type_in_progress_that_synced_before_was_stored():
    statuses = _statuses()
    statuses["invoices"]["currentStatus"] = "Fetching"
    found = {r[1]: r[2] for r in reads(from_data_status(statuses, [A], observed_at=OBSERVED))}
    assert found["invoices"] == "Complete"


def test_an_initial_read_that_only_failed_is_a_failed_read_dated_now():
    statuses = {"invoices": {"dataType": "invoices", "currentStatus": "AuthError"}}
    evidence = from_data_status(statuses, [A], observed_at=OBSERVED)
    assert reads(evidence) == [(A, "invoices", "AuthError", True, OBSERVED)]


def test_no_data_status_proves_nothing():
    assert not from_data_status({}, [A], observed_at=OBSERVED).found
