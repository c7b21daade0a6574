"""Synthetic events from Codat's API answers, through the real state machine."""

from __future__ import annotations

import copy
import json
from functools import cache

from codat_authflow.journey.events import (
    API,
    RECONCILIATION,
    company_created,
    connection_deleted,
    connection_observed,
    is_news,
    observations,
    read_completed,
    snapshot_of,
)
from state_machine import CompanyFacts, DataTypeRead, apply_events
from tests.support.processes import REPO_ROOT

COMPANY = "0498e921-9b53-4396-a412-4f2f5983b0a2"
T1, T2 = "2026-01-05T09:00:00.000000Z", "2026-01-05T09:05:00.000000Z"


@cache
def _spec():
    return json.loads((REPO_ROOT / "tests" / "data" / "Codat-Platform.json").read_text())


def connection(**changes):
    """The spec's Connection example (create-connection's answer), adjusted."""
    example = _spec()["paths"]["/companies/{companyId}/connections"]["post"]["responses"]["200"][
        "content"
    ]["application/json"]["examples"]["Connection"]["value"]
    return {**copy.deepcopy(example), **changes}


def test_a_snapshot_uses_codats_field_names():
    snapshot = snapshot_of(
        connection(
            dataConnectionErrors=[
                {"statusCode": "403", "statusText": "User cancelled linking",
                 "errorMessage": "cancelled", "erroredOnUtc": "2026-01-05T09:00:00Z"}
            ]
        )
    )  # fmt: skip
    assert (snapshot.id, snapshot.status, snapshot.source_type) == (
        "ee2eb431-c0fa-4dc9-93fa-d29781c12bcd", "Linked", "Banking"
    )  # fmt: skip
    assert (snapshot.platform_key, snapshot.platform_name) == ("dfxm", "Basiq")
    assert snapshot.link_url.startswith("https://link-api.codat.io/")
    assert snapshot.errors[0].status_text == "User cancelled linking"


def test_a_pending_connection_moves_the_company_to_linking():
    event = connection_observed(
        COMPANY, connection(status="PendingAuth"), source=API, generated_at=T1
    )
    assert event.synthetic and event.source == API and event.type == "connection.created"
    outcome = apply_events(CompanyFacts(company_id=COMPANY), [event])
    assert outcome.state.value == "linking"
    assert outcome.transitions[0].synthetic


def test_ids_are_deterministic_so_replays_merge():
    a = connection_observed(COMPANY, connection(), source=API, generated_at=T1)
    b = connection_observed(COMPANY, connection(), source=API, generated_at=T1)
    assert a == b
    other = connection_observed(COMPANY, connection(), source=RECONCILIATION, generated_at=T1)
    assert other.id != a.id and other.id.startswith("reconciliation:connection.connected:")
    facts = apply_events(CompanyFacts(company_id=COMPANY), [a]).facts
    assert apply_events(facts, [b]).facts == facts


def test_a_newer_webhook_wins_over_an_older_observation():
    seen = connection_observed(COMPANY, connection(status="Linked"), source=API, generated_at=T1)
    unlinked = connection_observed(
        COMPANY, connection(status="Unlinked"), source=API, generated_at=T2
    )
    for order in ([seen, unlinked], [unlinked, seen]):
        assert apply_events(CompanyFacts(company_id=COMPANY), order).state.value == "revoked"


def test_a_deletion_keeps_the_platform_we_knew():
    created = connection_observed(COMPANY, connection(), source=API, generated_at=T1)
    facts = apply_events(CompanyFacts(company_id=COMPANY), [created]).facts
    known = facts.connection(created.connection.id)
    deleted = connection_deleted(COMPANY, known.id, known=known, source=API, generated_at=T2)
    after = apply_events(facts, [deleted])
    gone = after.facts.connection(known.id)
    assert gone.deleted_at == T2 and gone.platform_name == "Basiq"
    assert after.state.value == "revoked"


def test_company_created_is_stamped_with_codats_created_time():
    company = {"id": COMPANY, "name": "customer-8812", "created": "2022-11-10T10:45:18.1950523Z"}
    event = company_created(company, source=API, fallback_at=T1)
    assert event.generated_at == "2022-11-10T10:45:18.195052Z"
    assert company_created({"id": COMPANY}, source=API, fallback_at=T1).generated_at == T1
    facts = apply_events(CompanyFacts(company_id=COMPANY), [event]).facts
    assert (facts.name, facts.created_at) == ("customer-8812", event.generated_at)


def test_a_read_completion_brings_a_linked_company_to_ready():
    linked = connection_observed(COMPANY, connection(), source=RECONCILIATION, generated_at=T1)
    read = read_completed(
        COMPANY,
        initial=True,
        reads=[DataTypeRead(linked.connection.id, "invoices", "Complete")],
        generated_at=T2,
        source=RECONCILIATION,
    )
    assert read.type == "read.completed.initial" and read.synthetic
    outcome = apply_events(CompanyFacts(company_id=COMPANY), [linked, read])
    assert [t.to_state.value for t in outcome.transitions] == ["linked", "ready"]


def test_only_news_becomes_an_event():
    facts = apply_events(
        CompanyFacts(company_id=COMPANY),
        [connection_observed(COMPANY, connection(), source=API, generated_at=T1)],
    ).facts
    assert observations(COMPANY, facts, [connection()], source=API, generated_at=T2) == []
    assert is_news(facts, snapshot_of(connection(status="Unlinked")))
    assert is_news(facts, snapshot_of(connection(platformName="Basiq Open Banking")))
    assert is_news(facts, snapshot_of(connection(id="3fa85f64-5717-4562-b3fc-2c963f66afa6")))
