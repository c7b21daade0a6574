"""A pending connection's Link URL is handed out only while it can be used:
Codat's Link URLs work once and expire one day after they are issued. Prism's
examples hold no `PendingAuth` connection, so these run on the adapter stub
of test_reconcile_rules (the HTTP calls are contract-tested in tests/contract).
"""

from __future__ import annotations

import json

from codat_authflow.journey.connections import create_connection, list_connections
from codat_authflow.journey.link_callback import record_outcome
from tests.unit.test_reconcile_rules import (  # the same stub and helpers
    DAY,
    NOW,
    XERO,
    codat_connection,
    in_linking,
    iso,
)
from tests.unit.test_reconcile_rules import codat as codat  # fixture
from tests.unit.test_reconcile_rules import journey as journey  # fixture


def listed(journey, company_id):
    (connection,) = [c for c in list_connections(journey, company_id)["connections"] if c["status"]]
    return connection


def test_a_fresh_link_url_is_handed_out_with_its_expiry(journey, codat):
    company_id = in_linking(journey, XERO)
    codat.connections = [codat_connection(XERO, "PendingAuth", NOW - 3600)]
    connection = listed(journey, company_id)
    assert connection["linkUrlState"] == "usable"
    assert connection["linkUrl"] == codat.connections[0]["linkUrl"]
    assert connection["linkUrlExpiresAt"] == iso(NOW - 3600 + DAY)
    assert connection["action"] is None


def test_an_expired_link_url_is_withheld_with_the_action_to_take(journey, codat):
    company_id = in_linking(journey, XERO)
    codat.connections = [codat_connection(XERO, "PendingAuth", NOW - DAY - 1)]
    connection = listed(journey, company_id)
    assert connection["linkUrlState"] == "expired"
    assert connection["linkUrl"] is None
    action = connection["action"]
    assert action["type"] == "create_connection" and action["method"] == "POST"
    assert action["path"] == f"/api/companies/{company_id}/connections"
    assert action["body"] == {"platformKey": "gbol"}
    assert "expired" in action["message"] and "Xero" in action["message"]


def test_a_link_url_the_user_came_back_from_is_used(journey, codat):
    company_id = in_linking(journey, XERO)
    codat.connections = [codat_connection(XERO, "PendingAuth", NOW - 600)]
    record_outcome(journey, company_id, XERO.id, {"outcome": "cancelled", "at": iso(NOW - 60)})
    connection = listed(journey, company_id)
    assert (connection["linkUrlState"], connection["linkUrl"]) == ("used", None)
    assert "already used" in connection["action"]["message"]


def test_a_link_url_with_a_linking_error_is_used(journey, codat):
    company_id = in_linking(journey, XERO)
    pending = codat_connection(XERO, "PendingAuth", NOW - 600)
    pending["dataConnectionErrors"] = [
        {"statusCode": "403", "statusText": "Forbidden", "errorMessage": "User cancelled"}
    ]
    codat.connections = [pending]
    assert listed(journey, company_id)["linkUrlState"] == "used"


def test_a_linked_connection_has_no_link_url_to_use(journey, codat):
    company_id = in_linking(journey, XERO)
    codat.connections = [codat_connection(XERO, "Linked", NOW - 3 * DAY)]
    connection = listed(journey, company_id)
    assert (connection["linkUrlState"], connection["linkUrl"], connection["action"]) == (
        None,
        None,
        None,
    )


def test_creating_a_connection_for_the_same_platform_gives_a_fresh_url(journey, codat):
    company_id = in_linking(journey, XERO)
    dead = codat_connection(XERO, "PendingAuth", NOW - DAY - 1)
    dead["linkUrl"] = (
        f"https://link-api.codat.io/companies/{company_id}/connections/{XERO.id}/start"
    )
    codat.connections = [dead]
    action = listed(journey, company_id)["action"]
    journey.redis.set(
        journey.keys.integration_cache("gbol"),
        json.dumps({"key": "gbol", "sourceType": "Accounting", "enabled": True}),
    )
    created = create_connection(journey, company_id, action["body"]["platformKey"])
    assert "create-connection" in codat.calls
    assert created["connectionId"] != XERO.id
    assert created["linkUrl"] and created["linkUrl"] != dead["linkUrl"]
    states = {
        c["connectionId"]: c["linkUrlState"]
        for c in list_connections(journey, company_id)["connections"]
    }
    assert states == {XERO.id: "expired", created["connectionId"]: "usable"}
