"""The connect pages (issue 14) in process, on fakeredis and a fake Codat:
connect-link tokens (signed, expiring, revocable, company-scoped), CSRF on
every form, the scope of connection ids, the rate limit on creations, and
that a refusal changes nothing."""

from __future__ import annotations

import re
import time

import fakeredis
import httpx
import pytest

from app import create_app
from codat_authflow.connect.links import ConnectLinks, CsrfError, InvalidLink
from codat_authflow.journey.codat import build_http_client
from codat_authflow.journey.service import Journey
from state_machine import parse_codat_event
from tests.support.fake_codat import FakeCodat
from tests.support.lifecycles import Lifecycle

ENV = {
    "REDIS_URL": "redis://unused",
    "API_TOKEN": "s3cret-token",
    "CODAT_WEBHOOK_SECRETS": "whsec_dGVzdC1zZWNyZXQ=",
    "CODAT_API_KEY": "a2V5",
    "CODAT_BASE_URL": "http://codat.invalid",
    "CONNECT_SOURCE_TYPES": "Accounting,Banking",
    "CONNECT_CREATIONS_PER_HOUR": "3",
}
AUTH = {"Authorization": "Bearer s3cret-token"}


def make_app(redis, fake: FakeCodat, **env: str):
    app = create_app({**ENV, **env}, redis=redis)
    services = app.extensions["authflow"]
    app.extensions["journey"] = Journey.build(
        services.settings,
        services.redis,
        services.store,
        http_client=build_http_client(
            connect_timeout=1, timeout=1, transport=httpx.MockTransport(fake.handler)
        ),
    )
    return app


def seed_company(app) -> str:
    """A company Codat's `company.created` made known (applied directly, as the
    drain would: the drain's loggers stay uncached for tests/unit/test_drain.py)."""
    services = app.extensions["authflow"]
    life = Lifecycle()
    life.company("company.created")
    services.updates.apply_one(life.company_id, [parse_codat_event(b) for b in life.events])
    return life.company_id


@pytest.fixture
def redis():
    return fakeredis.FakeRedis()


@pytest.fixture
def fake():
    return FakeCodat()


@pytest.fixture
def app(redis, fake):
    return make_app(redis, fake)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def company(app):
    return seed_company(app)


def new_link(client, company_id: str) -> dict:
    response = client.post(f"/api/companies/{company_id}/connect-links", headers=AUTH)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def path_of(url: str) -> str:
    return "/" + url.split("/", 3)[3]


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def snapshot(redis) -> dict:
    """Every key but the rate limiter's counters and cookies-free caches."""
    return {
        k: redis.dump(k)
        for k in sorted(redis.keys("*"))
        if b":ratelimit" not in k and b":cache:" not in k
    }


# -- tokens ------------------------------------------------------------------------


def test_the_api_issues_a_link_that_opens_the_company_pages(client, company, fake):
    link = new_link(client, company)
    assert link["url"].startswith("http://localhost/connect/")
    assert link["companyId"] == company and link["linkId"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", link["expiresAt"])
    page = client.get(path_of(link["url"]))
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Xero" in html and "QuickBooks Online" in html and "Basiq" in html
    assert "static.codat.io/public/officialLogos" in html  # the cached branding
    assert "powered-by-codat.svg" in html and "connect to your platform?" in html
    assert "mailto:?subject=" in html
    assert "s3cret-token" not in html  # the pages never see the API token
    assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")


def test_the_link_api_needs_the_token_and_a_known_company(client, company):
    assert client.post(f"/api/companies/{company}/connect-links").status_code == 401
    unknown = "0498e921-9b53-4396-a412-4f2f5983b0a2"
    assert client.post(f"/api/companies/{unknown}/connect-links", headers=AUTH).status_code == 404


def test_branding_and_integrations_are_cached(client, company, fake):
    path = path_of(new_link(client, company)["url"])
    client.get(path)
    first = len(fake.calls)
    client.get(path)
    assert len(fake.calls) == first  # no Codat call on the second view


def test_a_tampered_token_is_refused_with_a_plain_page(client, company):
    path = path_of(new_link(client, company)["url"])
    token = path.rsplit("/", 1)[1]
    tampered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    response = client.get(f"/connect/{tampered}")
    assert response.status_code == 404
    assert "text/html" in response.content_type
    assert "This link is not valid" in response.get_data(as_text=True)


def test_a_token_for_another_company_cannot_be_forged(app):
    links = app.extensions["connect_links"]
    other = ConnectLinks(
        app.extensions["authflow"].settings.__class__(
            **{**app.extensions["authflow"].settings.__dict__, "connect_secret": "other-secret"}
        ),
        links.redis,
        links.keys,
    )
    forged = other.issue("0498e921-9b53-4396-a412-4f2f5983b0a2")
    with pytest.raises(InvalidLink) as caught:
        links.open(forged.token)
    assert caught.value.reason == "tampered"


def test_an_expired_token_is_refused(app, client, company):
    links = app.extensions["connect_links"]
    link = links.issue(company)
    links.clock = lambda: time.time() + 7 * 24 * 3600 + 1
    response = client.get(f"/connect/{link.token}")
    assert response.status_code == 410
    assert "expired" in response.get_data(as_text=True)


def test_one_link_or_every_link_can_be_revoked(client, company):
    first, second = new_link(client, company), new_link(client, company)
    assert client.get(path_of(first["url"])).status_code == 200
    revoked = client.delete(
        f"/api/companies/{company}/connect-links/{first['linkId']}", headers=AUTH
    )
    assert revoked.status_code == 200
    assert client.get(path_of(first["url"])).status_code == 410
    assert client.get(path_of(second["url"])).status_code == 200
    assert client.delete(f"/api/companies/{company}/connect-links", headers=AUTH).status_code == 200
    assert client.get(path_of(second["url"])).status_code == 410
    third = new_link(client, company)  # links issued afterwards work
    assert client.get(path_of(third["url"])).status_code == 200


def test_a_token_opens_its_company_and_nothing_else(app, client, company, fake):
    other = seed_company(app)
    theirs = fake.add_connection(other, "gbol")
    path = path_of(new_link(client, company)["url"])
    # Their connection, named in a confirmation URL or a form: refused, nothing changed.
    assert client.get(f"{path}/connections/{theirs['id']}/unlink").status_code == 404
    page = client.get(f"{path}/connections")
    csrf = csrf_of(client.get(path).get_data(as_text=True))
    before = snapshot(app.extensions["authflow"].redis)
    calls = len(fake.calls)
    for action in ("unlink", "delete", "reconnect"):
        response = client.post(
            f"{path}/actions/{action}",
            data={"csrf_token": csrf, "connectionId": theirs["id"], "understood": "yes"},
        )
        assert response.status_code == 404, action
        assert "Nothing was changed" in response.get_data(as_text=True)
    assert fake.calls[calls:] == []
    assert snapshot(app.extensions["authflow"].redis) == before
    assert theirs["status"] == "Linked"
    assert page.status_code == 200


# -- CSRF ---------------------------------------------------------------------------


def test_choosing_a_platform_creates_the_connection_and_redirects_to_link(client, company, fake):
    path = path_of(new_link(client, company)["url"])
    csrf = csrf_of(client.get(path).get_data(as_text=True))
    response = client.post(f"{path}/choose", data={"csrf_token": csrf, "platformKey": "gbol"})
    assert response.status_code == 303
    assert response.headers["Location"].startswith("https://link-api.codat.io/companies/")
    assert "connect_return=" in response.headers["Set-Cookie"]
    activity = client.get(f"/api/companies/{company}/connect-activity", headers=AUTH).get_json()
    assert activity["results"][0]["actor"] == "customer"
    assert activity["results"][0]["action"] == "connection.create"
    state = client.get(f"/api/companies/{company}", headers=AUTH).get_json()["state"]
    assert state == "linking"


@pytest.mark.parametrize("csrf", [None, "", "forged", "from-another-link"])
def test_a_form_without_a_valid_csrf_token_changes_nothing(app, client, company, fake, csrf):
    path = path_of(new_link(client, company)["url"])
    client.get(path)  # the CSRF cookie
    if csrf == "from-another-link":
        other = path_of(new_link(client, company)["url"])
        csrf = csrf_of(client.get(other).get_data(as_text=True))
    before = snapshot(app.extensions["authflow"].redis)
    calls = len(fake.calls)
    data = {"platformKey": "gbol"}
    if csrf is not None:
        data["csrf_token"] = csrf
    response = client.post(f"{path}/choose", data=data)
    assert response.status_code == 400
    assert "Nothing was changed" in response.get_data(as_text=True)
    assert fake.calls[calls:] == []
    assert snapshot(app.extensions["authflow"].redis) == before


def test_a_csrf_token_is_bound_to_the_browser_cookie(app, company):
    links = app.extensions["connect_links"]
    link = links.issue(company)
    token = links.csrf_token(link, "cookie-a")
    links.check_csrf(link, "cookie-a", token)
    for cookie, value in (("cookie-b", token), (None, token), ("cookie-a", None)):
        with pytest.raises(CsrfError):
            links.check_csrf(link, cookie, value)


def test_connection_creations_are_rate_limited_per_link(client, company, fake):
    path = path_of(new_link(client, company)["url"])
    csrf = csrf_of(client.get(path).get_data(as_text=True))
    statuses = [
        client.post(f"{path}/choose", data={"csrf_token": csrf, "platformKey": "dfxm"}).status_code
        for _ in range(4)
    ]
    assert statuses == [303, 303, 303, 429]
    refused = client.post(f"{path}/choose", data={"csrf_token": csrf, "platformKey": "dfxm"})
    assert "text/html" in refused.content_type
    assert "Too many attempts" in refused.get_data(as_text=True)
    created = [c for c in fake.calls if c.startswith("POST /companies/")]
    assert len(created) == 3
    # Another link of the same company has its own budget.
    other = path_of(new_link(client, company)["url"])
    csrf = csrf_of(client.get(other).get_data(as_text=True))
    response = client.post(f"{other}/choose", data={"csrf_token": csrf, "platformKey": "dfxm"})
    assert response.status_code == 303


# -- manage, and back from Link --------------------------------------------------------


def test_manage_unlink_and_delete_own_connections(app, client, company, fake):
    mine = fake.add_connection(company, "gbol")
    path = path_of(new_link(client, company)["url"])
    page = client.get(f"{path}/connections")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "Xero" in html and "Revoke access" in html
    confirm = client.get(f"{path}/connections/{mine['id']}/unlink")
    assert confirm.status_code == 200
    csrf = csrf_of(confirm.get_data(as_text=True))
    done = client.post(
        f"{path}/actions/unlink", data={"csrf_token": csrf, "connectionId": mine["id"]}
    )
    assert done.status_code == 303 and done.headers["Location"].endswith("done=unlink")
    assert mine["status"] == "Unlinked"
    # Delete needs the stronger confirmation.
    refused = client.post(
        f"{path}/actions/delete", data={"csrf_token": csrf, "connectionId": mine["id"]}
    )
    assert refused.status_code == 400 and mine["id"] in fake.connections[company]
    deleted = client.post(
        f"{path}/actions/delete",
        data={"csrf_token": csrf, "connectionId": mine["id"], "understood": "yes"},
    )
    assert deleted.status_code == 303
    assert mine["id"] not in fake.connections[company]
    actions = client.get(f"/api/companies/{company}/connect-activity", headers=AUTH).get_json()
    assert [a["action"] for a in actions["results"]] == ["connection.delete", "connection.unlink"]
    assert {a["actor"] for a in actions["results"]} == {"customer"}
    # The company's own event log says who acted, too.
    logged = app.extensions["authflow"].store.events(company)
    by_customer = [event.type for event, _ in logged if event.source == "customer"]
    assert by_customer == ["connection.disconnected", "connection.deleted"], logged


def test_reconnect_sends_a_deauthorized_connection_to_a_fresh_link_url(client, company, fake):
    mine = fake.add_connection(company, "gbol", status="Deauthorized")
    path = path_of(new_link(client, company)["url"])
    html = client.get(f"{path}/connections").get_data(as_text=True)
    assert "Reconnect" in html
    response = client.post(
        f"{path}/actions/reconnect", data={"csrf_token": csrf_of(html), "connectionId": mine["id"]}
    )
    assert response.status_code == 303
    assert response.headers["Location"] == mine["linkUrl"]


def test_the_callback_shows_the_connect_result_page_to_a_customer_from_a_link(
    client, company, fake
):
    path = path_of(new_link(client, company)["url"])
    csrf = csrf_of(client.get(path).get_data(as_text=True))
    chosen = client.post(f"{path}/choose", data={"csrf_token": csrf, "platformKey": "gbol"})
    connection_id = chosen.headers["Location"].split("/connections/")[1].split("/")[0]
    fake.connections[company][connection_id]["status"] = "Linked"
    back = client.get(
        f"/link/callback?statusCode=200&companyId={company}&connectionId={connection_id}"
    )
    html = back.get_data(as_text=True)
    assert back.status_code == 200
    assert "Xero is connected" in html and "data-status-url" in html
    status = client.get(f"{path}/status").get_json()
    assert status["state"] == "linked" and status["ready"] is False
    cancelled = client.get(
        f"/link/callback?statusCode=403&companyId={company}&connectionId={connection_id}"
    )
    assert "connect/" in cancelled.get_data(as_text=True)


def test_without_a_connect_session_the_callback_page_is_unchanged(client, company):
    back = client.get(f"/link/callback?statusCode=403&companyId={company}")
    assert back.status_code == 400
    assert "connect.css" not in back.get_data(as_text=True)


def test_the_pages_speak_french_from_accept_language(client, company):
    path = path_of(new_link(client, company)["url"])
    html = client.get(path, headers={"Accept-Language": "fr-FR,fr;q=0.9,en;q=0.5"}).get_data(
        as_text=True
    )
    assert '<html lang="fr">' in html
    assert "Connectez votre logiciel de comptabilité" in html


def test_the_french_catalogue_translates_every_message_and_is_compiled():
    """Every string of the pages (templates and views) has a French
    translation, and the committed .mo is the compiled .po."""
    from io import BytesIO
    from pathlib import Path

    from babel.messages.extract import extract_from_dir
    from babel.messages.mofile import read_mo
    from babel.messages.pofile import read_po

    root = Path(__file__).resolve().parents[2] / "app" / "connect"
    method_map = [("**.py", "python"), ("**/templates/**.html", "jinja2")]
    ids = {
        (m[2] if isinstance(m[2], str) else m[2][0])
        for m in extract_from_dir(str(root), method_map)
    }
    lc = root / "translations" / "fr" / "LC_MESSAGES"
    po = read_po(BytesIO((lc / "messages.po").read_bytes()), locale="fr")
    translated = {m.id: m.string for m in po if m.id and m.string}
    assert ids - set(translated) == set(), "untranslated: run pybabel (docs/connect-pages.md)"
    mo = read_mo(BytesIO((lc / "messages.mo").read_bytes()))
    assert {m.id: m.string for m in mo if m.id} == translated


def test_the_hosts_own_pages_still_take_over_after_link(redis, fake):
    app = make_app(redis, fake, LINK_SUCCESS_URL="https://lender.example/connected")
    client = app.test_client()
    company = seed_company(app)
    path = path_of(new_link(client, company)["url"])
    csrf = csrf_of(client.get(path).get_data(as_text=True))
    chosen = client.post(f"{path}/choose", data={"csrf_token": csrf, "platformKey": "gbol"})
    connection_id = chosen.headers["Location"].split("/connections/")[1].split("/")[0]
    fake.connections[company][connection_id]["status"] = "Linked"
    back = client.get(
        f"/link/callback?statusCode=200&companyId={company}&connectionId={connection_id}"
    )
    assert back.status_code == 303
    assert back.headers["Location"].startswith("https://lender.example/connected?")


def test_the_result_page_offers_the_optional_banking_step(client, company, fake):
    path = path_of(new_link(client, company)["url"])
    csrf = csrf_of(client.get(path).get_data(as_text=True))
    chosen = client.post(f"{path}/choose", data={"csrf_token": csrf, "platformKey": "gbol"})
    connection_id = chosen.headers["Location"].split("/connections/")[1].split("/")[0]
    back = client.get(
        f"/link/callback?statusCode=200&companyId={company}&connectionId={connection_id}"
    )
    assert "Also connect your bank accounts (optional)" in back.get_data(as_text=True)
    # Once a bank account is linked, the optional step is no longer offered.
    fake.connections[company][connection_id]["status"] = "Linked"
    chosen = client.post(f"{path}/choose", data={"csrf_token": csrf, "platformKey": "dfxm"})
    assert chosen.status_code == 303, chosen.get_data(as_text=True)
    bank_id = chosen.headers["Location"].split("/connections/")[1].split("/")[0]
    fake.connections[company][bank_id]["status"] = "Linked"
    time.sleep(0.01)
    back = client.get(f"/link/callback?statusCode=200&companyId={company}&connectionId={bank_id}")
    assert "Basiq is connected" in back.get_data(as_text=True)
    assert "Also connect your bank accounts" not in back.get_data(as_text=True)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CONNECT_SOURCE_TYPES", "Accounting,Telepathy"),
        ("CONNECT_SOURCE_TYPES", " , "),
        ("CONNECT_ACCENT_COLOUR", "red"),
        ("CONNECT_ACCENT_COLOUR", "#12345"),
        ("CONNECT_LINK_LIFETIME_SECONDS", "5"),
        ("CONNECT_BASE_URL", "ftp://x"),
    ],
)
def test_bad_connect_settings_are_refused_at_start(name, value):
    from codat_authflow.settings import ConfigError, Settings

    with pytest.raises(ConfigError, match=name):
        Settings.from_env({**ENV, name: value})


def test_connect_settings_defaults():
    from codat_authflow.settings import Settings

    settings = Settings.from_env({k: v for k, v in ENV.items() if not k.startswith("CONNECT_")})
    assert settings.connect_source_types == ("Accounting",)
    assert settings.connect_link_lifetime_seconds == 7 * 24 * 3600
    assert settings.connect_accent_colour == "#1a56db"
    assert Settings.from_env(
        {**ENV, "CONNECT_SOURCE_TYPES": "banking, accounting"}
    ).connect_source_types == ("Banking", "Accounting")


@pytest.mark.parametrize(
    ("kind", "status"), [("tampered", 404), ("expired", 410), ("revoked", 410)]
)
def test_a_refused_token_changes_nothing_even_with_a_valid_form(
    app, client, company, fake, kind, status
):
    links = app.extensions["connect_links"]
    link = links.issue(company)
    path = f"/connect/{link.token}"
    csrf = csrf_of(client.get(path).get_data(as_text=True))
    mine = fake.add_connection(company, "gbol")
    client.get(f"{path}/connections")  # our facts know the connection
    if kind == "tampered":
        path = f"/connect/{link.token[:-4]}AAAA"
    elif kind == "expired":
        links.clock = lambda: time.time() + 8 * 24 * 3600
    else:
        links.revoke(link.link_id)
    before = snapshot(app.extensions["authflow"].redis)
    calls = len(fake.calls)
    forms = [
        ("choose", {"csrf_token": csrf, "platformKey": "gbol"}),
        ("actions/unlink", {"csrf_token": csrf, "connectionId": mine["id"]}),
        ("actions/delete", {"csrf_token": csrf, "connectionId": mine["id"], "understood": "yes"}),
    ]
    for action, data in forms:
        response = client.post(f"{path}/{action}", data=data)
        assert response.status_code == status, action
        assert "text/html" in response.content_type
    assert client.get(f"{path}/status").status_code == status
    assert fake.calls[calls:] == []
    assert snapshot(app.extensions["authflow"].redis) == before


def test_the_pages_are_rate_limited_per_address_but_not_their_assets(redis, fake, monkeypatch):
    from app.connect import views

    monkeypatch.setattr(views, "PAGES_LIMIT", "5 per minute")
    app = make_app(redis, fake)
    client = app.test_client()
    path = path_of(new_link(client, seed_company(app))["url"])
    for _ in range(10):
        assert client.get("/connect/static/connect.css").status_code == 200
    statuses = [client.get(f"{path}/status").status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]
