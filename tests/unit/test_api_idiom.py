"""Every `/api` operation in one idiom: documented in `/api/openapi.json`
(a route without docs fails here), one body-size rule, one error shape; and
the offline Swagger UI at `/api/docs`."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import fakeredis
import pytest

from app import create_app

ENV = {
    "REDIS_URL": "redis://unused",
    "API_TOKEN": "t",
    "CODAT_WEBHOOK_SECRETS": "whsec_dGVzdC1zZWNyZXQ=",
}
AUTH = {"Authorization": "Bearer t"}
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
# The document and the page about it are not operations of the API.
NOT_OPERATIONS = ("api-docs.", "api_docs_assets.")


@pytest.fixture
def app():
    return create_app(ENV, redis=fakeredis.FakeRedis())


@pytest.fixture
def client(app):
    return app.test_client()


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _documented_path(rule: str) -> str:
    path = rule.removeprefix("/api")
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", lambda m: "{" + _camel(m[1]) + "}", path)


def test_every_api_route_is_in_the_openapi_document_and_nothing_else(app, client):
    routes = {
        (_documented_path(rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/") and not rule.endpoint.startswith(NOT_OPERATIONS)
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    doc = client.get("/api/openapi.json", headers=AUTH).get_json()
    documented = {
        (path, method)
        for path, item in doc["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }
    assert len(routes) >= 19  # plus the document itself: 20 under /api
    assert routes - documented == set(), "routes missing from /api/openapi.json"
    assert documented - routes == set(), "documented operations with no route"


def test_every_operation_documents_its_answers_and_errors(client):
    doc = client.get("/api/openapi.json", headers=AUTH).get_json()
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            statuses = set(operation["responses"])
            assert "401" in statuses, (path, method)
            assert any(s.startswith("2") for s in statuses), (path, method)
            assert operation.get("summary"), (path, method)
            if "{" in path:
                assert "400" in statuses, (path, method)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/api/companies"),
        ("post", "/api/subscriptions"),
        ("patch", "/api/subscriptions/sub_" + "0" * 32),
        ("post", "/api/deliveries/replay"),
        ("get", "/api/subscriptions"),  # a body where none is read is refused all the same
    ],
)
def test_one_body_limit_for_all_of_the_api(method, path):
    client = create_app({**ENV, "API_MAX_BODY_BYTES": "2048"}, redis=fakeredis.FakeRedis())
    client = client.test_client()
    body = b'{"description": "' + b"x" * 3000 + b'"}'
    response = getattr(client, method)(
        path, data=body, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == 413
    error = response.get_json()["error"]
    assert (error["status"], error["code"]) == (413, "request_entity_too_large")
    assert "2048" in error["message"]


@pytest.mark.parametrize(
    ("path", "query", "code", "field"),
    [
        ("/api/integrations", "enabled=maybe", "invalid_query", "enabled"),
        ("/api/funnel", "to=never", "invalid_query", "to"),
        ("/api/subscriptions/sub_" + "0" * 32 + "/deliveries", "limit=x", "invalid_query", "limit"),
        ("/api/subscriptions/sub_1", "", "invalid_subscription_id", "subscriptionId"),
        ("/api/integrations/GBOL/branding", "", "invalid_platform_key", "platformKey"),
    ],
)
def test_bad_input_is_our_400_never_webargs_422(client, path, query, code, field):
    response = client.get(f"{path}?{query}", headers=AUTH)
    assert response.status_code == 400, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == code and field in error["details"] and field in error["message"]


class _Assets(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.urls.append(value)


def test_the_docs_page_is_swagger_ui_served_offline(client):
    page = client.get("/api/docs", headers=AUTH)
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "SwaggerUIBundle" in html and '"/api/openapi.json"' in html
    parser = _Assets()
    parser.feed(html)
    assert len(parser.urls) >= 3
    for url in parser.urls:
        assert url.startswith("/api/docs/assets/"), f"{url} is not one of our own assets"
        asset = client.get(url, headers=AUTH)
        assert asset.status_code == 200 and asset.data, url
    assert not re.search(r"https?://|//cdn", html.split("<script>", 1)[0])


def test_the_document_is_behind_the_token_like_all_of_the_api(client):
    response = client.get("/api/openapi.json")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/api/openapi.json", headers=AUTH).status_code == 200


@pytest.mark.parametrize("path", ["/api/docs", "/api/docs/assets/swagger-ui-bundle.js"])
def test_the_page_and_its_assets_open_in_a_plain_browser(client, path):
    """They hold no data: a browser cannot send a bearer header to load a page."""
    assert client.get(path).status_code == 200


def test_an_unknown_asset_is_our_json_404(client):
    response = client.get("/api/docs/assets/../../app/__init__.py", headers=AUTH)
    assert response.status_code == 404 and response.get_json()["error"]["status"] == 404
