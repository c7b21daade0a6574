"""Bad input to every journey endpoint is a 4xx naming the problem, decided
before Codat is called (a tripwire transport fails any call); and the
OpenAPI document describes the endpoints."""

from __future__ import annotations

import json

import fakeredis
import httpx
import pytest

from app import create_app
from codat_authflow.journey.codat import build_http_client
from codat_authflow.journey.service import Journey

COMPANY = "0498e921-9b53-4396-a412-4f2f5983b0a2"
CONNECTION = "ee2eb431-c0fa-4dc9-93fa-d29781c12bcd"
ENV = {
    "REDIS_URL": "redis://unused",
    "API_TOKEN": "s3cret-token",
    "CODAT_WEBHOOK_SECRETS": "whsec_dGVzdC1zZWNyZXQ=",
    "CODAT_API_KEY": "a2V5",
    "CODAT_BASE_URL": "http://codat.invalid",
}
AUTH = {"Authorization": "Bearer s3cret-token"}


def _tripwire(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"Codat must not be called for bad input: {request.method} {request.url}")


@pytest.fixture
def app():
    app = create_app(ENV, redis=fakeredis.FakeRedis())
    services = app.extensions["authflow"]
    app.extensions["journey"] = Journey.build(
        services.settings,
        services.redis,
        services.store,
        http_client=build_http_client(
            connect_timeout=1, timeout=1, transport=httpx.MockTransport(_tripwire)
        ),
    )
    return app


@pytest.fixture
def client(app):
    return app.test_client()


def error_of(response, status):
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["status"] == status and error["message"]
    return error


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": 42}, "name"),
        ({"name": "cus_123"}, "name"),  # Codat's pattern has no underscore
        ({"name": "a&b"}, "name"),
        ({"name": " padded"}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": "ok", "description": ["no"]}, "description"),
        ({"name": "ok", "tags": "region=uk"}, "tags"),
        ({"name": "ok", "tags": {f"k{i}": "v" for i in range(11)}}, "tags"),
        ({"name": "ok", "tags": {"k" * 28: "v"}}, "tags"),
        ({"name": "ok", "tags": {"k": 1}}, "tags"),
        ({"name": "ok", "colour": "blue"}, "colour"),
        ({"description": "no id"}, "name"),
        ({"customerId": ""}, "customerId"),
        ({"customerId": "   "}, "customerId"),
        ({"customerId": "x" * 201}, "customerId"),
        ({"customerId": "a\nb"}, "customerId"),
        ({"customerId": 7}, "customerId"),
        ({"customerId": "c", "name": "cust_1"}, "name"),
        ({"customerId": "c", "name": "a/b"}, "name"),
        ({"customerId": "c", "tags": {"customerId": "other"}}, "tags"),
        ({"customerId": "c", "tags": {f"k{i}": "v" for i in range(10)}}, "tags"),
    ],
)
def test_create_company_names_the_bad_field(client, body, field):
    error = error_of(client.post("/api/companies", json=body, headers=AUTH), 400)
    assert error["code"] == "invalid_request"
    assert field in error["details"] and field in error["message"]


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"data": b"", "content_type": "application/json"}, 400, "missing_body"),
        ({"data": b"{nope", "content_type": "application/json"}, 400, "invalid_json"),
        ({"data": b"[1, 2]", "content_type": "application/json"}, 400, "invalid_json"),
        ({"data": b'{"name": "ok"}', "content_type": "text/plain"}, 415, "unsupported_media_type"),
        ({"data": b"[" * 100_000 + b"]" * 100_000, "content_type": "application/json"}, 413, None),
        (
            {"data": json.dumps({"name": "ok", "description": "x" * 70_000}),
             "content_type": "application/json"},
            413,
            "request_entity_too_large",
        ),
    ],
)  # fmt: skip
def test_create_company_rejects_bad_bodies(client, kwargs, status, code):
    error = error_of(client.post("/api/companies", headers=AUTH, **kwargs), status)
    if code:
        assert error["code"] == code


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("sourceType=payroll", "sourceType"),
        ("enabled=maybe", "enabled"),
        ("source=accounting", "source"),
        ("sourceType=accounting&sourceType=banking", "sourceType"),
    ],
)
def test_list_integrations_names_the_bad_parameter(client, query, field):
    error = error_of(client.get(f"/api/integrations?{query}", headers=AUTH), 400)
    assert field in error["details"]


def test_a_bad_source_type_names_codats_seven():
    app = create_app(ENV, redis=fakeredis.FakeRedis())
    error = error_of(
        app.test_client().get("/api/integrations?sourceType=payroll", headers=AUTH), 400
    )
    message = error["details"]["sourceType"][0]
    for name in ("accounting", "banking", "bankfeed", "commerce", "expense", "other", "unknown"):
        assert name in message


def test_a_display_name_codat_refuses_names_the_allowed_characters(client):
    body = {"customerId": "cust_123", "name": "Toft #1"}
    error = error_of(client.post("/api/companies", json=body, headers=AUTH), 400)
    message = error["details"]["name"][0]
    assert "A-Z" in message and "- ' , & @ . ? !" in message and "customerId" in message


@pytest.mark.parametrize("key", ["GBOL", "gbo", "gbol1", "gb-l"])
def test_branding_needs_a_platform_key(client, key):
    error = error_of(client.get(f"/api/integrations/{key}/branding", headers=AUTH), 400)
    assert error["code"] == "invalid_platform_key"


@pytest.mark.parametrize(
    ("method", "path", "code"),
    [
        ("post", "/api/companies/not-a-uuid/connections", "invalid_company_id"),
        ("get", "/api/companies/not-a-uuid/connections", "invalid_company_id"),
        ("post", f"/api/companies/{COMPANY}/connections/nope/unlink", "invalid_connection_id"),
        ("delete", f"/api/companies/{COMPANY}/connections/nope", "invalid_connection_id"),
        ("delete", f"/api/companies/nope/connections/{CONNECTION}", "invalid_company_id"),
        ("post", "/api/companies/nope/refresh", "invalid_company_id"),
        ("delete", "/api/companies/not-a-uuid", "invalid_company_id"),
        ("get", "/api/companies/nope/connection-management-token", "invalid_company_id"),
    ],
)
def test_malformed_ids_are_400(client, method, path, code):
    error = error_of(getattr(client, method)(path, headers=AUTH, json={"platformKey": "gbol"}), 400)
    assert error["code"] == code


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "platformKey"),
        ({"platformKey": "Xero"}, "platformKey"),
        ({"platformKey": 7}, "platformKey"),
        ({"platformKey": "gbol", "linkParams": {"bad key": "x"}}, "linkParams"),
        ({"platformKey": "gbol", "linkParams": ["a"]}, "linkParams"),
        ({"platformKey": "gbol", "extra": 1}, "extra"),
    ],
)
def test_create_connection_names_the_bad_field(client, body, field):
    path = f"/api/companies/{COMPANY}/connections"
    error = error_of(client.post(path, json=body, headers=AUTH), 400)
    assert field in error["details"]


@pytest.mark.parametrize(
    "path",
    [
        f"/api/companies/{COMPANY}/connections/{CONNECTION}/unlink",
        f"/api/companies/{COMPANY}/refresh",
    ],
)
def test_bodiless_posts_refuse_unexpected_fields(client, path):
    error = error_of(client.post(path, json={"force": True}, headers=AUTH), 400)
    assert "force" in error["details"]


def test_every_journey_endpoint_needs_the_token(client):
    for method, path in [
        ("post", "/api/companies"),
        ("get", "/api/integrations"),
        ("get", "/api/integrations/gbol/branding"),
        ("post", f"/api/companies/{COMPANY}/connections"),
        ("get", f"/api/companies/{COMPANY}/connections"),
        ("post", f"/api/companies/{COMPANY}/connections/{CONNECTION}/unlink"),
        ("delete", f"/api/companies/{COMPANY}/connections/{CONNECTION}"),
        ("post", f"/api/companies/{COMPANY}/refresh"),
        ("get", "/api/reconciliation/stuck"),
        ("get", "/api/openapi.json"),
    ]:
        assert getattr(client, method)(path).status_code == 401, path


def test_the_openapi_document_describes_the_journey(client):
    response = client.get("/api/openapi.json", headers=AUTH)
    assert response.status_code == 200
    doc = response.get_json()
    assert doc["openapi"].startswith("3.")
    assert doc["servers"] == [{"url": "/api"}]
    operations = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert {
        ("/companies", "post"),
        ("/companies/{companyId}", "get"),
        ("/integrations", "get"),
        ("/integrations/{platformKey}/branding", "get"),
        ("/companies/{companyId}/connections", "post"),
        ("/companies/{companyId}/connections", "get"),
        ("/companies/{companyId}/connections/{connectionId}/unlink", "post"),
        ("/companies/{companyId}/connections/{connectionId}", "delete"),
        ("/companies/{companyId}/refresh", "post"),
        ("/reconciliation/stuck", "get"),
        ("/companies/{companyId}", "delete"),
        ("/companies/{companyId}/connection-management-token", "get"),
    } <= operations
    create = doc["components"]["schemas"]["CreateCompanyRequest"]
    assert {"customerId", "name", "description", "tags"} == set(create["properties"])
    assert "pattern" in create["properties"]["name"]
    assert create["properties"]["customerId"]["maxLength"] == 200
    post = doc["paths"]["/companies"]["post"]
    assert {"200", "201", "400", "402", "409", "413", "502", "503", "504"} <= set(post["responses"])
    query = doc["paths"]["/integrations"]["get"]["parameters"]
    assert {p["name"] for p in query} == {"sourceType", "enabled"}
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
