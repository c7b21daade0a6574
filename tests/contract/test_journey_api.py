"""The journey's endpoints (Flask test client, fakeredis) with Codat served by
Prism from Codat's spec."""

from __future__ import annotations

import json
import socket
import threading

import pytest

from codat_authflow.journey.codat import build_http_client
from state_machine import parse_codat_event
from tests.contract.conftest import AUTH, use_http_client
from tests.support.lifecycles import Connection, Lifecycle

pytestmark = pytest.mark.contract

# What Prism answers from the spec's examples.
PRISM_COMPANY = "0498e921-9b53-4396-a412-4f2f5983b0a2"  # create-company
PRISM_CONNECTION = "ee2eb431-c0fa-4dc9-93fa-d29781c12bcd"  # the Connection example (Basiq)


@pytest.fixture
def client(journey_app):
    return journey_app.test_client()


def journey_of(app):
    return app.extensions["journey"]


def create_company(client, name="customer-8812", **body):
    return client.post("/api/companies", json={"name": name, **body}, headers=AUTH)


def seed_integration(app, platform_key, source_type, enabled=True):
    """Put get-integration's answer in our own cache: Prism can only answer the
    spec's Integration example, whose sourceType is invalid (see
    test_codat_client.py)."""
    journey = journey_of(app)
    journey.redis.set(
        journey.keys.integration_cache(platform_key),
        json.dumps({"key": platform_key, "sourceType": source_type, "enabled": enabled,
                    "name": platform_key, "logoUrl": "https://example.com/logo.png"}),
    )  # fmt: skip


def apply_webhooks(app, bodies):
    journey_of(app).updates.apply(
        {PRISM_COMPANY: [parse_codat_event(b) for b in bodies]},
    )


# -- companies ----------------------------------------------------------------


def test_creating_a_company_records_it_in_state_created(client, codat_mock):
    response = create_company(client, description="early access", tags={"region": "uk"})
    assert response.status_code == 201, response.json
    body = response.json
    assert body["companyId"] == PRISM_COMPANY and body["state"] == "created"
    assert response.headers["Location"] == f"/api/companies/{PRISM_COMPANY}"
    assert client.get(f"/api/companies/{PRISM_COMPANY}", headers=AUTH).json["state"] == "created"
    assert [c.path for c in codat_mock.calls] == ["/companies", "/companies"]  # lookup, create
    assert codat_mock.calls[1].json() == {
        "name": "customer-8812",
        "description": "early access",
        "tags": {"region": "uk"},
    }


def test_the_same_name_again_returns_the_same_company_without_calling_codat(client, codat_mock):
    first = create_company(client)
    codat_mock.calls.clear()
    again = create_company(client)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json["companyId"] == first.json["companyId"]
    assert codat_mock.calls == []


def test_a_company_codat_already_has_under_that_name_is_adopted(client, codat_mock):
    # list-companies' first example holds "My Test Company".
    response = create_company(client, name="My Test Company")
    assert response.status_code == 200
    assert response.json["companyId"] == "3fa85f64-5717-4562-b3fc-2c963f66afa6"
    assert codat_mock.calls_to("POST", "/companies") == []


def test_a_customer_id_twice_is_one_codat_company(client, codat_mock, journey_app):
    customer = "cust_123/\u03b1"
    first = client.post("/api/companies", json={"customerId": customer}, headers=AUTH)
    assert first.status_code == 201, first.json
    (lookup,) = codat_mock.calls_to("GET", "/companies")
    assert "tags=customerId%3Db64.Y3VzdF8xMjMvzrE" in lookup.query
    (created,) = codat_mock.calls_to("POST", "/companies")
    assert created.json() == {"name": "cust-123--", "tags": {"customerId": "b64.Y3VzdF8xMjMvzrE"}}
    again = client.post(
        "/api/companies", json={"customerId": customer, "name": "Toft & sons"}, headers=AUTH
    )
    assert again.status_code == 200
    assert again.json["companyId"] == first.json["companyId"] == PRISM_COMPANY
    assert len(codat_mock.calls) == 2, "the second call is answered from our marker"


def test_a_customer_id_with_a_display_name_and_tags(client, codat_mock):
    body = {"customerId": "cust_9", "name": "Toft & sons", "description": "d", "tags": {"r": "uk"}}
    assert client.post("/api/companies", json=body, headers=AUTH).status_code == 201
    (created,) = codat_mock.calls_to("POST", "/companies")
    assert created.json() == {
        "name": "Toft & sons",
        "description": "d",
        "tags": {"r": "uk", "customerId": "cust_9"},
    }


def test_erasing_a_company_deletes_it_at_codat_then_here(client, codat_mock, journey_app):
    create_company(client)
    response = client.delete(f"/api/companies/{PRISM_COMPANY}", headers=AUTH)
    assert response.status_code == 200, response.json
    assert response.json["deletedAtCodat"] is True
    (call,) = codat_mock.calls_to("DELETE", f"/companies/{PRISM_COMPANY}")
    assert call.status == 204
    assert client.get(f"/api/companies/{PRISM_COMPANY}", headers=AUTH).status_code == 404
    assert journey_of(journey_app).redis.hexists("authflow:tombstones", PRISM_COMPANY)


def test_erasure_stops_when_codat_fails(client, codat_mock, journey_app):
    create_company(client)
    codat_mock.prefer[r"DELETE /companies/.*"] = "code=500"
    response = client.delete(f"/api/companies/{PRISM_COMPANY}", headers=AUTH)
    assert response.status_code == 502
    assert journey_of(journey_app).store.get(PRISM_COMPANY) is not None


def test_the_connection_management_token_is_codats(client, codat_mock):
    create_company(client)
    response = client.get(
        f"/api/companies/{PRISM_COMPANY}/connection-management-token", headers=AUTH
    )
    assert response.status_code == 200, response.json
    assert response.json["companyId"] == PRISM_COMPANY
    assert response.json["accessToken"].startswith("eyJ")
    assert response.headers["Cache-Control"] == "no-store"
    (call,) = codat_mock.calls_to("GET", f"/companies/{PRISM_COMPANY}/connectionManagement/.*")
    assert call.path.endswith("/connectionManagement/accessToken")


def test_the_connection_management_token_of_an_unknown_company_is_404(client, codat_mock):
    response = client.get(
        "/api/companies/5b7e4b4e-6c55-4c37-9a48-8c4d7b2e1f00/connection-management-token",
        headers=AUTH,
    )
    assert response.status_code == 404 and codat_mock.calls == []


def test_concurrent_creations_with_one_name_make_one_codat_company(journey_app, codat_mock):
    results = []

    def post():
        results.append(create_company(journey_app.test_client(), name="customer-race"))

    threads = [threading.Thread(target=post) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.status_code for r in results) == [200, 200, 200, 201]
    assert {r.json["companyId"] for r in results} == {PRISM_COMPANY}
    assert len(codat_mock.calls_to("POST", "/companies")) == 1


def test_a_codat_failure_creates_nothing_and_a_retry_works(client, codat_mock, journey_app):
    codat_mock.prefer[r"POST /companies"] = "code=500"
    failed = create_company(client)
    assert failed.status_code == 502
    error = failed.json["error"]
    assert error["code"] == "codat_error"
    assert error["details"]["codatStatus"] == 500 and error["details"]["correlationId"]
    assert journey_of(journey_app).store.get(PRISM_COMPANY) is None
    del codat_mock.prefer[r"POST /companies"]
    assert create_company(client).status_code == 201


def test_codats_rate_limit_is_503_with_retry_after_and_pauses_reconciliation(
    client, codat_mock, journey_app
):
    from codat_authflow.journey.rate_limit import current_pause

    codat_mock.prefer[r"GET /companies"] = "code=429"
    response = create_company(client)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "60"  # Prism's 429 has no Retry-After
    assert response.json["error"]["code"] == "codat_rate_limited"
    assert response.json["error"]["details"]["codatStatus"] == 429
    assert len(codat_mock.calls) == 1
    journey = journey_of(journey_app)
    assert current_pause(journey.redis, journey.keys).reason == "retry_after"
    assert journey.store.get(PRISM_COMPANY) is None


def test_a_codat_plan_limit_is_402_with_codats_message(client, codat_mock):
    codat_mock.prefer[r"POST /companies"] = "code=402"
    response = create_company(client)
    assert response.status_code == 402
    error = response.json["error"]
    assert error["code"] == "codat_plan_limit"
    assert "50-company limit" in error["message"]
    assert "50-company limit" in error["details"]["codatMessage"]


def test_a_codat_timeout_is_504_and_a_retry_creates_once(journey_app, codat_mock, redis):
    silent = socket.socket()  # accepts connections, never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        use_http_client(
            journey_app,
            build_http_client(connect_timeout=1, timeout=1),
            codat_base_url=f"http://127.0.0.1:{silent.getsockname()[1]}",
        )
        response = create_company(journey_app.test_client())
    finally:
        silent.close()
    assert response.status_code == 504
    assert response.json["error"]["code"] == "codat_timeout"
    assert redis.keys("authflow:companies:by-name:*") == [], "the claim is released"
    use_http_client(journey_app, codat_mock.http_client())
    assert create_company(journey_app.test_client()).status_code == 201


def test_without_a_codat_key_the_journey_is_503_and_webhooks_still_work(redis):
    from app import create_app
    from tests.contract.conftest import journey_env
    from tests.support.signing import encode_body, signed_headers

    env = journey_env("http://127.0.0.1:9")
    del env["CODAT_API_KEY"]
    app = create_app(env, redis=redis)
    client = app.test_client()
    response = create_company(client)
    assert response.status_code == 503
    assert "CODAT_API_KEY" in response.json["error"]["message"]
    body = encode_body(Lifecycle().company("company.created"))
    webhook = client.post(
        "/webhooks/codat", data=body, headers=signed_headers("whsec_dGVzdC1zZWNyZXQ=", body)
    )
    assert webhook.status_code == 202


# -- integrations ---------------------------------------------------------------


def test_integrations_are_listed_with_codats_query(client, codat_mock):
    codat_mock.prefer[r"GET /integrations"] = "dynamic=true"
    response = client.get("/api/integrations?sourceType=accounting&enabled=true", headers=AUTH)
    assert response.status_code == 200, response.json
    assert response.json["query"] == "sourceType=Accounting&&enabled=true"
    assert "query=sourceType%3DAccounting%26%26enabled%3Dtrue" in codat_mock.calls[0].query
    for integration in response.json["results"]:
        assert (
            integration["brandingUrl"] == f"/api/integrations/{integration['platformKey']}/branding"
        )


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("accounting", "Accounting"),
        ("Banking", "Banking"),
        ("bankfeed", "BankFeed"),
        ("BankFeed", "BankFeed"),
        ("commerce", "Commerce"),
        ("expense", "Expense"),
        ("other", "Other"),
        ("unknown", "Unknown"),
    ],
)
def test_every_codat_source_type_can_be_filtered(client, codat_mock, given, sent):
    codat_mock.prefer[r"GET /integrations"] = "dynamic=true"
    response = client.get(f"/api/integrations?sourceType={given}", headers=AUTH)
    assert response.status_code == 200, response.json
    assert response.json["query"] == f"sourceType={sent}"
    assert f"query=sourceType%3D{sent}" in codat_mock.calls[0].query


def test_codats_invalid_integration_example_is_a_clear_502(client):
    response = client.get("/api/integrations", headers=AUTH)
    assert response.status_code == 502
    assert response.json["error"]["code"] == "codat_invalid_response"


def test_branding_is_cached_for_a_day(client, codat_mock, redis):
    first = client.get("/api/integrations/gbol/branding", headers=AUTH)
    second = client.get("/api/integrations/gbol/branding", headers=AUTH)
    assert first.status_code == second.status_code == 200
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("miss", "hit")
    assert first.json == second.json and first.json["logo"]["square"]["image"]["src"]
    assert len(codat_mock.calls) == 1
    assert 86000 < redis.ttl("authflow:cache:branding:gbol") <= 86400


def test_branding_of_an_unknown_platform_is_404(client, codat_mock):
    codat_mock.prefer[r"GET /integrations/.*/branding"] = "code=404"
    response = client.get("/api/integrations/zzzz/branding", headers=AUTH)
    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found_at_codat"


# -- connections ----------------------------------------------------------------


def test_creating_a_connection_feeds_the_state_machine(journey_app, client, codat_mock):
    create_company(client)
    seed_integration(journey_app, "dfxm", "Banking")
    codat_mock.calls.clear()
    response = client.post(
        f"/api/companies/{PRISM_COMPANY}/connections",
        json={"platformKey": "dfxm", "linkParams": {"link.showSandboxIntegrations": "false"}},
        headers=AUTH,
    )
    assert response.status_code == 201, response.json
    body = response.json
    assert body["connectionId"] == PRISM_CONNECTION
    assert body["linkUrl"].endswith("/start?link.showSandboxIntegrations=false")
    # Prism's example connection is already Linked; the state follows Codat's answer.
    assert (body["status"], body["companyState"]) == ("Linked", "linked")
    company = client.get(f"/api/companies/{PRISM_COMPANY}", headers=AUTH).json
    assert company["history"][-1]["synthetic"] is True
    assert company["history"][-1]["eventId"].startswith("api:connection.created:")
    assert [c.path for c in codat_mock.calls] == [f"/companies/{PRISM_COMPANY}/connections"]


def test_a_second_linked_accounting_connection_is_refused_after_checking_codat(
    journey_app, client, codat_mock
):
    create_company(client)
    xero = Connection("51baa045-4836-4317-a42e-3542e991e581")  # Accounting, gbol
    life = Lifecycle(company_id=PRISM_COMPANY)
    apply_webhooks(journey_app, [life.connection("connection.connected", xero)])
    seed_integration(journey_app, "qbon", "Accounting")
    codat_mock.calls.clear()
    response = client.post(
        f"/api/companies/{PRISM_COMPANY}/connections", json={"platformKey": "qbon"}, headers=AUTH
    )
    assert response.status_code == 409
    error = response.json["error"]
    assert error["code"] == "accounting_connection_exists"
    assert xero.id in error["message"] and "unlink or delete" in error["message"]
    assert error["details"]["connections"][0]["connectionId"] == xero.id
    assert codat_mock.calls_to("POST", r"/companies/.*/connections") == []
    assert codat_mock.calls_to("GET", f"/companies/{PRISM_COMPANY}/connections"), "confirmed"


def test_banking_connections_are_not_limited(journey_app, client, codat_mock):
    create_company(client)
    xero = Connection("51baa045-4836-4317-a42e-3542e991e581")
    apply_webhooks(
        journey_app, [Lifecycle(company_id=PRISM_COMPANY).connection("connection.connected", xero)]
    )
    seed_integration(journey_app, "dfxm", "Banking")
    response = client.post(
        f"/api/companies/{PRISM_COMPANY}/connections", json={"platformKey": "dfxm"}, headers=AUTH
    )
    assert response.status_code == 201


def test_listing_connections_merges_codat_with_our_state(journey_app, client, codat_mock):
    create_company(client)
    deleted = Connection("2e9d2c44-f675-40ba-8049-353bfcb5e171", "Commerce", "hmbc", "Shopify")
    life = Lifecycle(company_id=PRISM_COMPANY)
    apply_webhooks(
        journey_app,
        [
            life.connection("connection.created", deleted),
            life.connection("connection.deleted", deleted),
        ],
    )
    response = client.get(f"/api/companies/{PRISM_COMPANY}/connections", headers=AUTH)
    assert response.status_code == 200
    by_id = {c["connectionId"]: c for c in response.json["connections"]}
    live = by_id[PRISM_CONNECTION]
    assert (live["status"], live["platformKey"], live["tracked"]["status"]) == (
        "Linked", "dfxm", "Linked"
    )  # fmt: skip
    assert (
        by_id[deleted.id]["status"] is None and by_id[deleted.id]["tracked"]["status"] == "Deleted"
    )
    assert response.json["state"] == "linked"


def test_unlink_and_delete_feed_the_state_machine(journey_app, client, codat_mock):
    create_company(client)
    seed_integration(journey_app, "dfxm", "Banking")
    client.post(
        f"/api/companies/{PRISM_COMPANY}/connections", json={"platformKey": "dfxm"}, headers=AUTH
    )
    unlinked = client.post(
        f"/api/companies/{PRISM_COMPANY}/connections/{PRISM_CONNECTION}/unlink", headers=AUTH
    )
    assert unlinked.status_code == 200
    # Prism answers unlink with the spec's Connection example (still "Linked"):
    # the state is what Codat's answer says, nothing invented.
    assert unlinked.json["status"] == "Linked"
    deleted = client.delete(
        f"/api/companies/{PRISM_COMPANY}/connections/{PRISM_CONNECTION}", headers=AUTH
    )
    assert deleted.status_code == 200
    assert (deleted.json["status"], deleted.json["companyState"]) == ("Deleted", "revoked")
    company = client.get(f"/api/companies/{PRISM_COMPANY}", headers=AUTH).json
    (connection,) = company["connections"]
    assert (connection["status"], connection["platformKey"]) == ("Deleted", "dfxm")
    # The webhook Codat sends afterwards changes nothing.
    life = Lifecycle(company_id=PRISM_COMPANY)
    hook = life.connection(
        "connection.deleted", Connection(PRISM_CONNECTION, "Banking", "dfxm", "Basiq")
    )
    before = company["state"]
    apply_webhooks(journey_app, [hook])
    assert client.get(f"/api/companies/{PRISM_COMPANY}", headers=AUTH).json["state"] == before


def test_unknown_connection_is_404(journey_app, client, codat_mock):
    create_company(client)
    codat_mock.prefer[r"PATCH /companies/.*/connections/.*"] = "code=404"
    response = client.post(
        f"/api/companies/{PRISM_COMPANY}/connections/{PRISM_CONNECTION}/unlink", headers=AUTH
    )
    assert response.status_code == 404
    assert response.json["error"]["code"] == "connection_not_found"


def test_refresh_queues_a_fetch(client, codat_mock):
    create_company(client)
    response = client.post(f"/api/companies/{PRISM_COMPANY}/refresh", headers=AUTH)
    assert response.status_code == 202
    assert response.json["status"] == "queued"
    assert codat_mock.calls_to("POST", f"/companies/{PRISM_COMPANY}/data/all")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/api/companies/{c}/connections"),
        ("get", "/api/companies/{c}/connections"),
        ("post", "/api/companies/{c}/connections/" + PRISM_CONNECTION + "/unlink"),
        ("delete", "/api/companies/{c}/connections/" + PRISM_CONNECTION),
        ("post", "/api/companies/{c}/refresh"),
    ],
)
def test_unknown_companies_are_404_without_calling_codat(client, codat_mock, method, path):
    unknown = "5b7e4b4e-6c55-4c37-9a48-8c4d7b2e1f00"
    kwargs = (
        {"json": {"platformKey": "dfxm"}}
        if path.endswith("connections") and method == "post"
        else {}
    )
    response = getattr(client, method)(path.format(c=unknown), headers=AUTH, **kwargs)
    assert response.status_code == 404
    assert response.json["error"]["code"] == "company_not_found"
    assert codat_mock.calls == []
