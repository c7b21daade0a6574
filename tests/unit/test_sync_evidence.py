"""What pull operations and data statuses prove about the initial sync."""

from __future__ import annotations

import copy
import json
from functools import cache

from journey.sync_evidence import from_data_status, from_pull_operations, needs_data_status
from tests.processes import REPO_ROOT

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


def test_initial_sync_complete_when_every_data_types_first_fetch_is_final():
    ops = [
        pull(A, "invoices", "Complete", "2026-01-05T09:00:00Z", "2026-01-05T09:02:00Z"),
        pull(A, "bills", "FetchError", "2026-01-05T09:00:01Z", "2026-01-05T09:03:00Z"),
        pull(A, "customers", "NotSupported", "2026-01-05T09:00:02Z"),
    ]
    evidence = from_pull_operations(ops, [A])
    assert evidence.initial_completed_at == "2026-01-05T09:03:00.000000Z"
    assert evidence.connection_ids == (A,)
    assert evidence.basis == "pull-operations"


def test_a_fetch_still_running_means_not_complete_but_a_read_completed():
    ops = [
        pull(A, "invoices", "Complete", "2026-01-05T09:00:00Z", "2026-01-05T09:02:00Z"),
        pull(A, "bills", "Fetching", "2026-01-05T09:00:01Z"),
    ]
    evidence = from_pull_operations(ops, [A])
    assert evidence.initial_completed_at is None
    assert evidence.read_completed_at == "2026-01-05T09:02:00.000000Z"


def test_a_refresh_running_later_does_not_hide_a_finished_initial_sync():
    ops = [
        pull(A, "invoices", "Complete", "2026-01-05T09:00:00Z", "2026-01-05T09:02:00Z"),
        pull(A, "invoices", "Queued", "2026-01-06T09:00:00Z"),
    ]
    assert from_pull_operations(ops, [A]).initial_completed_at == "2026-01-05T09:02:00.000000Z"


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


def test_the_specs_data_status_example_proves_an_initial_sync():
    evidence = from_data_status(_statuses(), observed_at=OBSERVED)
    assert evidence.initial_completed_at == "2022-01-01T00:00:00.000000Z"
    assert evidence.connection_ids == () and evidence.basis == "data-status"


def test_a_data_type_in_progress_means_only_a_read_completed():
    statuses = _statuses()
    statuses["invoices"]["currentStatus"] = "Fetching"
    evidence = from_data_status(statuses, observed_at=OBSERVED)
    assert evidence.initial_completed_at is None
    assert evidence.read_completed_at == "2022-01-01T00:00:00.000000Z"


def test_an_initial_sync_that_only_failed_is_still_complete_and_dated_now():
    statuses = {"invoices": {"dataType": "invoices", "currentStatus": "AuthError"}}
    evidence = from_data_status(statuses, observed_at=OBSERVED)
    assert evidence.initial_completed_at == OBSERVED


def test_no_data_status_proves_nothing():
    assert not from_data_status({}, observed_at=OBSERVED).found
