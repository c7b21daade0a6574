"""What every fuzzed answer must satisfy, and the app under fuzz (Flask's
test client on fakeredis, Codat's API replaced by an in-process mock, DNS
answered without the network)."""

from __future__ import annotations

import json
import socket
from typing import Any

import fakeredis
import httpx
from flask import Flask

from app import create_app
from app.journey_setup import init_journey
from codat_authflow.journey.codat.client import build_http_client
from tests.fuzz.strategies import SECRET
from tests.support.logs import LogCapture

API_TOKEN = "fuzz-api-token"
ENV = {
    "REDIS_URL": "redis://unused",
    "API_TOKEN": API_TOKEN,
    "CODAT_WEBHOOK_SECRETS": SECRET,
    "CODAT_API_KEY": "fuzz-codat-key",
    "CODAT_BASE_URL": "http://codat.invalid",
    "APP_ENV": "production",
}

# Answers that mean "a dependency is unavailable, retry": the only 5xx allowed.
# Redis down anywhere; Codat down or misbehaving on the endpoints that call it.
REDIS_DOWN = {(503, "storage_unavailable")}
CODAT_DOWN = {
    (502, "codat_error"),
    (502, "codat_unreachable"),
    (502, "codat_invalid_response"),
    (503, "codat_not_configured"),
    (504, "codat_timeout"),
}


def codat_mock(request: httpx.Request) -> httpx.Response:
    """Codat, badly: errors, empty objects or a refused connection by path."""
    digest = sum(request.url.path.encode()) % 4
    if digest == 0:
        raise httpx.ConnectError("connection refused (mock)", request=request)
    if digest == 1:
        return httpx.Response(503, json={"statusCode": 503, "error": "unavailable"})
    if digest == 2:
        return httpx.Response(404, json={"statusCode": 404, "error": "not found"})
    return httpx.Response(200, json={})


def offline_getaddrinfo(real=socket.getaddrinfo):
    """getaddrinfo that never queries DNS: IP literals (and localhost) resolve,
    any other name fails as NXDOMAIN would, after the same argument checks."""

    def resolve(host, port, family=0, type=0, proto=0, flags=0):
        if host == "localhost":
            host = "127.0.0.1"
        return real(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)

    return resolve


def build_app(redis: fakeredis.FakeRedis, **env: str) -> tuple[Flask, LogCapture]:
    app = create_app({**ENV, **env}, redis=redis)
    codat = build_http_client(
        connect_timeout=1, timeout=2, transport=httpx.MockTransport(codat_mock)
    )
    init_journey(app, http_client=codat)
    return app, LogCapture()  # after create_app, which points logging at stdout


def check_error_shape(status: int, body: bytes) -> dict[str, Any] | None:
    """Every error is JSON: {"error": {"status", "code", "message"}}."""
    if status < 400:
        return None
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise AssertionError(f"{status} answered with a non-JSON body {body[:200]!r}") from exc
    error = document.get("error") if isinstance(document, dict) else None
    assert isinstance(error, dict), f"{status}: no error object in {document!r:.300}"
    assert error.get("status") == status, f"error.status {error.get('status')} != {status}"
    assert isinstance(error.get("code"), str) and error["code"], error
    assert isinstance(error.get("message"), str) and error["message"], error
    return error


def check_status(status: int, error: dict[str, Any] | None, allowed_5xx: set) -> None:
    if status >= 500:
        code = (error or {}).get("code")
        assert (status, code) in allowed_5xx, f"answered {status} {code}: {error!r:.400}"


def check_logged(lines: list[dict[str, Any]], method: str, path: str, status: int) -> None:
    """The answer is logged with the request's context, and no line is a bare
    traceback: anything carrying an exception also says which request."""
    assert not [line for line in lines if line.get("_not_json")], lines
    matching = [
        line
        for line in lines
        if line.get("method") == method
        and line.get("path") == path
        and line.get("status") == status
    ]
    assert matching, f"no log line with method/path/status for {method} {path} -> {status}: {lines}"
    if status >= 500:
        assert any(line.get("level") == "error" for line in matching), matching
    for line in lines:
        if "exception" in line:
            assert line.get("method") == method and line.get("path") == path, (
                f"a traceback without the request's context: {line!r:.600}"
            )
