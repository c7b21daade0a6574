"""The subscriptions API: validation, SSRF guard, secrets, rotation."""

from __future__ import annotations

import fakeredis
import pytest

from app import create_app

ENV = {
    "REDIS_URL": "redis://unused",
    "API_TOKEN": "t",
    "CODAT_WEBHOOK_SECRETS": "whsec_dGVzdC1zZWNyZXQ=",
}
AUTH = {"Authorization": "Bearer t"}


@pytest.fixture
def client():
    return create_app(ENV, redis=fakeredis.FakeRedis()).test_client()


@pytest.fixture
def private_client():
    env = {**ENV, "ALLOW_PRIVATE_SUBSCRIBER_URLS": "1"}
    return create_app(env, redis=fakeredis.FakeRedis()).test_client()


def create(client, **body):
    return client.post("/api/subscriptions", json=body, headers=AUTH)


def test_create_returns_the_secret_once(private_client):
    response = create(private_client, url="http://127.0.0.1:9/hook", eventTypes=["company.ready"])
    assert response.status_code == 201
    body = response.json
    assert body["id"].startswith("sub_")
    assert body["secret"].startswith("whsec_")
    assert body["enabled"] is True and body["eventTypes"] == ["company.ready"]
    listed = private_client.get("/api/subscriptions", headers=AUTH).json["subscriptions"]
    assert [s["id"] for s in listed] == [body["id"]]
    assert "secret" not in listed[0]
    assert "secret" not in private_client.get(f"/api/subscriptions/{body['id']}", headers=AUTH).json


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"eventTypes": ["*"]}, "url"),
        ({"url": "http://example.com/x"}, "eventTypes"),
        ({"url": "ftp://example.com/x", "eventTypes": ["*"]}, "http or https"),
        ({"url": "http:///nohost", "eventTypes": ["*"]}, "must name a host"),
        ({"url": "http://127.0.0.1:8080/x", "eventTypes": ["*"]}, "non-public address"),
        ({"url": "http://10.1.2.3/x", "eventTypes": ["*"]}, "non-public address"),
        ({"url": "http://169.254.169.254/latest", "eventTypes": ["*"]}, "non-public address"),
        ({"url": "http://[::1]/x", "eventTypes": ["*"]}, "non-public address"),
        ({"url": "http://user:pw@example.com/", "eventTypes": ["*"]}, "credentials"),
        (
            {"url": "http://example.com/x", "eventTypes": ["company.exploded"]},
            "valid: company.ready",
        ),
        ({"url": "http://example.com/x", "eventTypes": []}, "eventTypes"),
        ({"url": "http://example.com/x", "eventTypes": "company.ready"}, "eventTypes"),
        ({"url": 42, "eventTypes": ["*"]}, "url"),
        ({"url": "http://" + "a" * 3000 + ".com/", "eventTypes": ["*"]}, "url"),
    ],
)
def test_bad_subscriptions_get_400_naming_the_problem(client, body, fragment):
    response = create(client, **body)
    assert response.status_code == 400, response.json
    assert fragment in str(response.json["error"])


def test_oversize_and_non_json_bodies(client):
    big = {"url": "http://example.com/x", "eventTypes": ["*"], "description": "x" * 70_000}
    assert create(client, **big).status_code == 413
    response = client.post(
        "/api/subscriptions",
        data="url=x",
        headers={**AUTH, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 415
    response = client.post(
        "/api/subscriptions", data="[1]", headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == 400


def test_subscriptions_need_the_token(client):
    assert client.get("/api/subscriptions").status_code == 401
    assert client.post("/api/subscriptions", json={}).status_code == 401


def test_patch_delete_and_unknown_ids(private_client):
    sub = create(private_client, url="http://127.0.0.1:9/a", eventTypes=["*"]).json
    url = f"/api/subscriptions/{sub['id']}"
    patched = private_client.patch(
        url, json={"enabled": False, "eventTypes": ["company.ready"]}, headers=AUTH
    )
    assert patched.status_code == 200
    assert patched.json["enabled"] is False and patched.json["eventTypes"] == ["company.ready"]
    assert private_client.patch(url, json={}, headers=AUTH).status_code == 400
    assert private_client.patch(url, json={"enabled": "yes"}, headers=AUTH).status_code == 400
    assert private_client.delete(url, headers=AUTH).status_code == 204
    assert private_client.get(url, headers=AUTH).status_code == 404
    assert private_client.patch(url, json={"enabled": True}, headers=AUTH).status_code == 404
    assert private_client.get("/api/subscriptions/nope", headers=AUTH).status_code == 400


def test_rotation_keeps_the_old_secret_signing_for_a_day(private_client):
    sub = create(private_client, url="http://127.0.0.1:9/a", eventTypes=["*"]).json
    rotated = private_client.post(f"/api/subscriptions/{sub['id']}/rotate-secret", headers=AUTH)
    assert rotated.status_code == 200
    assert rotated.json["secret"] != sub["secret"]
    assert rotated.json["previousSecretsValidUntil"]
    store = private_client.application.extensions["authflow"].subscriptions
    secrets = store.get(sub["id"]).signing_secrets(now=__import__("time").time())
    assert secrets == [rotated.json["secret"], sub["secret"]]
    later = __import__("time").time() + 24 * 3600 + 1
    assert store.get(sub["id"]).signing_secrets(now=later) == [rotated.json["secret"]]


def test_replay_validates_its_filters(client):
    bad = client.post("/api/deliveries/replay", json={"from": "not a date"}, headers=AUTH)
    assert bad.status_code == 400
    ok = client.post("/api/deliveries/replay", json={}, headers=AUTH)
    assert ok.status_code == 200 and ok.json["replayed"] == 0
