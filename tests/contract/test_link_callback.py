"""`GET /link/callback` with Codat on Prism: the query string only names the
connection to check; what the user is told is what Codat confirms."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from state_machine import parse_codat_event
from tests.contract.conftest import AUTH, journey_env, use_http_client
from tests.support.lifecycles import Connection, Lifecycle

pytestmark = pytest.mark.contract

COMPANY = "0498e921-9b53-4396-a412-4f2f5983b0a2"
CONNECTION = "ee2eb431-c0fa-4dc9-93fa-d29781c12bcd"  # Prism's Connection example: Basiq, Linked
BASIQ = Connection(CONNECTION, "Banking", "dfxm", "Basiq")


@pytest.fixture
def app(journey_app):
    life = Lifecycle(company_id=COMPANY)
    events = [life.company("company.created"), life.connection("connection.created", BASIQ)]
    journey_app.extensions["journey"].updates.apply(
        {COMPANY: [parse_codat_event(e) for e in events]}
    )
    return journey_app


def callback(client, **params):
    query = {"companyId": COMPANY, "connectionId": CONNECTION, **params}
    return client.get("/link/callback", query_string=query)


def state(client):
    return client.get(f"/api/companies/{COMPANY}", headers=AUTH).json["state"]


def test_success_is_confirmed_with_codat_and_recorded(app, codat_mock):
    client = app.test_client()
    assert state(client) == "linking"
    response = callback(client, statusCode="200", platform="dfxm", platformName="Evil Bank")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "Your Basiq account is connected" in page  # Codat's name, not the query's
    assert "Evil Bank" not in page
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert [c.path for c in codat_mock.calls] == [f"/companies/{COMPANY}/connections/{CONNECTION}"]
    assert state(client) == "linked"
    history = client.get(f"/api/companies/{COMPANY}", headers=AUTH).json["history"]
    assert history[-1]["synthetic"] and history[-1]["eventId"].startswith("link-callback:")
    listed = client.get(f"/api/companies/{COMPANY}/connections", headers=AUTH).json
    outcome = next(c for c in listed["connections"] if c["connectionId"] == CONNECTION)
    assert outcome["lastLinkOutcome"]["outcome"] == "connected"
    assert outcome["lastLinkOutcome"]["reported"]["statusCode"] == 200
    assert outcome["lastLinkOutcome"]["checkedWithCodat"] is True


def test_a_query_string_claiming_success_changes_no_state(app, codat_mock):
    codat_mock.prefer[r"GET /companies/.*/connections/.*"] = "code=500"
    client = app.test_client()
    response = callback(client, statusCode="200")
    assert response.status_code == 200
    assert "We are finishing your connection" in response.get_data(as_text=True)
    assert state(client) == "linking"


@pytest.mark.parametrize(
    ("status_code", "title"),
    [
        ("403", "The connection was cancelled"),
        ("500", "The connection did not go through"),
        ("501", "This platform cannot be connected"),
        ("", "We could not confirm the connection"),
    ],
)
def test_each_reported_failure_gets_plain_words(app, codat_mock, status_code, title):
    codat_mock.prefer[r"GET /companies/.*/connections/.*"] = "code=503"  # Codat can't confirm
    response = callback(app.test_client(), statusCode=status_code, errorMessage="<script>x")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert title in page and "<script>" not in page


def test_a_connection_codat_does_not_know_is_invalid(app, codat_mock):
    codat_mock.prefer[r"GET /companies/.*/connections/.*"] = "code=404"
    response = callback(app.test_client(), statusCode="200")
    assert response.status_code == 400
    assert "could not tell which connection" in response.get_data(as_text=True)


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"statusCode": "200"},
        {"statusCode": "200", "companyId": COMPANY},
        {"statusCode": "200", "companyId": "not-a-uuid", "connectionId": CONNECTION},
        {"statusCode": "abc", "companyId": COMPANY, "connectionId": CONNECTION},
        {"companyId": "5b7e4b4e-6c55-4c37-9a48-8c4d7b2e1f00", "connectionId": CONNECTION},
    ],
)
def test_malformed_or_unknown_redirects_call_nobody(app, codat_mock, query):
    response = app.test_client().get("/link/callback", query_string=query)
    assert response.status_code == 400
    assert codat_mock.calls == []


def test_repeated_redirects_check_codat_once_in_a_few_seconds(app, codat_mock):
    client = app.test_client()
    callback(client, statusCode="200")
    callback(client, statusCode="200")
    assert len(codat_mock.calls) == 1


def test_redirects_to_the_configured_urls_keeping_their_query(app, codat_mock):
    use_http_client(
        app,
        codat_mock.http_client(),
        link_success_url="https://host.example/done?step=3",
        link_failure_url="https://host.example/failed",
    )
    client = app.test_client()
    success = callback(client, statusCode="200")
    assert success.status_code == 303
    target = urlsplit(success.headers["Location"])
    assert (target.netloc, target.path) == ("host.example", "/done")
    assert parse_qs(target.query) == {
        "step": ["3"],
        "outcome": ["connected"],
        "companyId": [COMPANY],
        "connectionId": [CONNECTION],
    }
    failure = client.get("/link/callback", query_string={"statusCode": "403"})
    assert failure.status_code == 303
    assert failure.headers["Location"] == "https://host.example/failed?outcome=invalid"


def test_configured_urls_must_be_absolute():
    from codat_authflow.settings import ConfigError, Settings

    with pytest.raises(ConfigError, match="LINK_SUCCESS_URL"):
        Settings.from_env(journey_env("http://127.0.0.1:9", LINK_SUCCESS_URL="/relative"))


# -- 201 and the host's own parameters ------------------------------------------------


def redirecting(app, codat_mock):
    use_http_client(
        app,
        codat_mock.http_client(),
        link_success_url="https://host.example/done?step=3",
        link_failure_url="https://host.example/failed",
    )
    return app.test_client()


def query_of(response) -> dict[str, list[str]]:
    assert response.status_code == 303, response.get_data(as_text=True)
    return parse_qs(urlsplit(response.headers["Location"]).query, keep_blank_values=True)


@pytest.mark.parametrize("query", [{"companyId": COMPANY}, {}])
def test_201_is_a_success_page_with_nothing_checked_or_recorded(app, codat_mock, query):
    client = app.test_client()
    response = client.get("/link/callback", query_string={"statusCode": "201", **query})
    assert response.status_code == 200
    assert "You are all set" in response.get_data(as_text=True)
    assert codat_mock.calls == [], "no connection named: nothing to check"
    assert state(client) == "linking"
    listed = client.get(f"/api/companies/{COMPANY}/connections", headers=AUTH).json
    assert all(c["lastLinkOutcome"] is None for c in listed["connections"])


def test_201_redirects_to_the_success_url(app, codat_mock):
    client = redirecting(app, codat_mock)
    response = client.get(
        "/link/callback",
        query_string={"statusCode": "201", "companyId": COMPANY, "connectionId": ""},
    )
    assert query_of(response) == {
        "step": ["3"],
        "outcome": ["completed"],
        "companyId": [COMPANY],
    }
    assert urlsplit(response.headers["Location"]).path == "/done"


def test_a_201_naming_a_connection_is_checked_like_a_200(app, codat_mock):
    client = app.test_client()
    response = callback(client, statusCode="201")
    assert "Your Basiq account is connected" in response.get_data(as_text=True)
    assert len(codat_mock.calls) == 1 and state(client) == "linked"


def test_the_hosts_own_parameters_are_passed_through(app, codat_mock):
    client = redirecting(app, codat_mock)
    success = callback(
        client,
        statusCode="200",
        journey="onboarding/\u00e9t\u00e9",
        customerRef="cust_123",
        empty="",
        platform="gbol",  # Codat's reserved parameters are not passed on
        sourceType="Accounting",
        outcome="connected-by-me",  # nor ours
        step="99",  # the configured URL's own parameters win
    )
    assert query_of(success) == {
        "step": ["3"],
        "journey": ["onboarding/\u00e9t\u00e9"],
        "customerRef": ["cust_123"],
        "empty": [""],
        "outcome": ["connected"],
        "companyId": [COMPANY],
        "connectionId": [CONNECTION],
    }
    failure = client.get(
        "/link/callback",
        query_string={"statusCode": "403", "journey": "onboarding", "errorMessage": "x"},
    )
    assert query_of(failure) == {"journey": ["onboarding"], "outcome": ["invalid"]}
    assert urlsplit(failure.headers["Location"]).path == "/failed"


def test_passed_through_parameters_change_no_state(app, codat_mock):
    codat_mock.prefer[r"GET /companies/.*/connections/.*"] = "code=500"
    client = redirecting(app, codat_mock)
    response = callback(client, statusCode="200", status="Linked", state="ready")
    assert query_of(response)["outcome"] == ["pending"]
    assert state(client) == "linking"


def test_passthrough_is_bounded():
    from codat_authflow.journey.link_callback import passthrough_params

    many = {f"p{i}": "v" for i in range(50)}
    assert len(passthrough_params(many)) == 20
    assert passthrough_params({"x" * 65: "v", "long": "v" * 501, "ok": "v"}) == {"ok": "v"}


def test_a_429_while_checking_still_answers_the_user_and_pauses_reconciliation(app, codat_mock):
    from codat_authflow.journey.rate_limit import current_pause

    codat_mock.prefer[r"GET /companies/.*/connections/.*"] = "code=429"
    response = callback(app.test_client(), statusCode="200")
    assert response.status_code == 200
    assert "We are finishing your connection" in response.get_data(as_text=True)
    journey = app.extensions["journey"]
    assert current_pause(journey.redis, journey.keys).reason == "retry_after"
