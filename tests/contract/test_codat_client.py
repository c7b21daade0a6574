"""Every Codat call the journey makes, through Codat's SDK, against Prism
serving Codat's own spec: the request is valid for the spec (Prism checks,
and `codat_mock` fails the test otherwise), and every answer the spec
documents, success or error, comes back as our own types."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from urllib.parse import unquote

import pytest

from codat_authflow.journey.codat import (
    CodatClient,
    CodatInvalidResponse,
    CodatNotFound,
    CodatPlanLimit,
    CodatRateLimited,
    CodatRejected,
    CodatTimeout,
    CodatUnreachable,
    build_http_client,
    integrations_query,
)
from tests.contract.conftest import TEST_CODAT_AUTH, TEST_CODAT_KEY
from tests.support.processes import free_port

pytestmark = pytest.mark.contract

COMPANY = "0498e921-9b53-4396-a412-4f2f5983b0a2"
CONNECTION = "ee2eb431-c0fa-4dc9-93fa-d29781c12bcd"


@pytest.fixture
def client(codat_mock):
    codat = CodatClient(
        api_key=TEST_CODAT_KEY, base_url=codat_mock.url, http_client=codat_mock.http_client()
    )
    yield codat
    codat.close()


def test_requests_carry_basic_auth_and_no_sdk_retries(client, codat_mock):
    codat_mock.prefer[r"GET /companies/.*/connections"] = "code=503"
    with pytest.raises(CodatRejected) as failure:
        client.list_connections(COMPANY)
    assert failure.value.codat_status == 503
    assert len(codat_mock.calls) == 1, "the SDK must not retry on its own"
    assert codat_mock.calls[0].headers["authorization"] == TEST_CODAT_AUTH
    assert "Basic " + base64.b64encode(TEST_CODAT_KEY.encode()).decode() == TEST_CODAT_AUTH


def test_the_portals_ready_made_header_is_sent_as_it_is(codat_mock):
    codat = CodatClient(
        api_key=TEST_CODAT_AUTH,
        base_url=codat_mock.url + "/",
        http_client=codat_mock.http_client(),
    )
    codat.get_branding("gbol")
    assert codat_mock.calls[0].headers["authorization"] == TEST_CODAT_AUTH


def test_create_company_sends_name_description_and_tags(client, codat_mock):
    company = client.create_company("customer-8812", "early access", {"region": "uk"})
    assert company["id"] and company["redirect"]
    (call,) = codat_mock.calls_to("POST", "/companies")
    assert call.json() == {
        "name": "customer-8812",
        "description": "early access",
        "tags": {"region": "uk"},
    }
    assert call.status == 200


def test_find_companies_queries_by_name_and_keeps_exact_matches(client, codat_mock):
    assert client.find_companies_named("My Test Company")[0]["id"] == (
        "3fa85f64-5717-4562-b3fc-2c963f66afa6"
    )
    assert client.find_companies_named("My Test") == []
    call = codat_mock.calls[0]
    assert call.path == "/companies"
    assert "query=name%3DMy%20Test%20Company" in call.query


def test_find_companies_filters_on_the_tag_and_keeps_exact_matches(client, codat_mock):
    assert client.find_companies_tagged("customerId", "b64.Y3VzdF8xMjMvzrE") == []
    (call,) = codat_mock.calls
    assert call.path == "/companies"
    assert "tags=customerId%3Db64.Y3VzdF8xMjMvzrE" in call.query
    assert "query=" not in call.query


def test_list_integrations_sends_the_query_encoded_as_codat_expects(client, codat_mock):
    codat_mock.prefer[r"GET /integrations"] = "dynamic=true"
    query = integrations_query("accounting", True)
    assert query == "sourceType=Accounting&&enabled=true"
    results = client.list_integrations(query)  # generated from the schema: any length
    assert all({"key", "name", "enabled", "logoUrl"} <= set(r) for r in results)
    call = codat_mock.calls[0]
    # Codat's guide: ?query=sourceType%3DAccounting%26%26enabled%3Dtrue
    assert "query=sourceType%3DAccounting%26%26enabled%3Dtrue" in call.query
    assert unquote(call.query.split("query=")[1].split("&")[0]) == query


def test_the_specs_own_integration_example_is_rejected_as_invalid(client, codat_mock):
    """Codat's `Integration` schema example swaps `sourceId` and `sourceType`
    (and writes feature types in lower case); the SDK validates answers, so a
    Codat that answered that would get a clear 502, not a crash."""
    with pytest.raises(CodatInvalidResponse) as failure:
        client.get_integration("gbol")
    assert failure.value.status == 502
    assert "sourceType" in (failure.value.codat_message or "")


def test_get_integration_and_branding(client, codat_mock):
    codat_mock.prefer[r"GET /integrations/gbol"] = "dynamic=true"
    integration = client.get_integration("gbol")
    assert integration["sourceType"] in {
        "Accounting", "Banking", "BankFeed", "Commerce", "Expense", "Other", "Unknown"
    }  # fmt: skip
    branding = client.get_branding("gbol")
    assert branding["logo"]["full"]["image"]["src"].startswith("https://")
    assert branding["button"]["default"]["image"]["alt"]


def test_connection_operations(client, codat_mock):
    created = client.create_connection(COMPANY, "dfxm")
    assert created["id"] == CONNECTION and created["linkUrl"].startswith("https://")
    assert codat_mock.calls_to("POST", f"/companies/{COMPANY}/connections")[0].json() == {
        "platformKey": "dfxm"
    }
    listed = client.list_connections(COMPANY)
    assert [c["id"] for c in listed] == [CONNECTION]
    assert client.get_connection(COMPANY, CONNECTION)["status"] == "Linked"
    assert client.unlink_connection(COMPANY, CONNECTION)["id"] == CONNECTION
    (unlink,) = codat_mock.calls_to("PATCH", f"/companies/{COMPANY}/connections/{CONNECTION}")
    assert unlink.json() == {"status": "Unlinked"}
    assert client.delete_connection(COMPANY, CONNECTION) is None
    assert codat_mock.calls_to("DELETE", f"/companies/{COMPANY}/connections/{CONNECTION}")


def test_data_operations(client, codat_mock):
    assert client.refresh_company_data(COMPANY) is None
    assert codat_mock.calls_to("POST", f"/companies/{COMPANY}/data/all")[0].status == 204
    statuses = client.get_data_status(COMPANY)
    assert statuses["invoices"]["currentStatus"] == "Complete"
    operations = client.list_pull_operations(COMPANY)
    assert operations[0]["status"] == "Initial" and operations[0]["isCompleted"] is False


@pytest.mark.parametrize(
    ("code", "expected", "our_status"),
    [
        (401, CodatRejected, 502),
        (402, CodatPlanLimit, 402),
        (403, CodatRejected, 502),
        (404, CodatNotFound, 404),
        (429, CodatRateLimited, 503),
        (500, CodatRejected, 502),
        (503, CodatRejected, 502),
    ],
)
def test_codat_errors_become_our_errors_with_codats_message(
    client, codat_mock, code, expected, our_status
):
    codat_mock.prefer[r"GET /companies/.*/connections/.*"] = f"code={code}"
    with pytest.raises(expected) as failure:
        client.get_connection(COMPANY, CONNECTION)
    error = failure.value
    assert (error.status, error.codat_status) == (our_status, code)
    assert error.correlation_id, "Codat's correlation id is kept for support"
    assert error.codat_message
    assert error.details()["operation"] == "get-connection"


def test_a_request_codat_rejects_as_malformed_is_reported_not_raised_raw(client, codat_mock):
    with pytest.raises(CodatRejected) as failure:
        client.list_connections("not-a-uuid")
    assert failure.value.codat_status == 400
    codat_mock.calls.clear()  # the violation was this test's point, not a bug


@pytest.fixture
def black_hole():
    """A TCP server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", free_port()))
    server.listen(16)
    accepted = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


def test_a_codat_that_does_not_answer_is_a_timeout_bounded_by_our_client(black_hole):
    codat = CodatClient(
        api_key=TEST_CODAT_KEY,
        base_url=black_hole,
        http_client=build_http_client(connect_timeout=1, timeout=1),
    )
    started = time.monotonic()
    with pytest.raises(CodatTimeout) as failure:
        codat.get_branding("gbol")
    elapsed = time.monotonic() - started
    assert failure.value.status == 504
    assert 0.9 < elapsed < 3, "our read timeout governs, not the SDK's 5 s default"


def test_an_unreachable_codat_is_reported():
    codat = CodatClient(
        api_key=TEST_CODAT_KEY,
        base_url=f"http://127.0.0.1:{free_port()}",
        http_client=build_http_client(connect_timeout=1, timeout=1),
    )
    with pytest.raises(CodatUnreachable) as failure:
        codat.list_connections("0498e921-9b53-4396-a412-4f2f5983b0a2")
    assert failure.value.status == 502
    assert json.dumps(failure.value.details())
