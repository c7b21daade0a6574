"""The same hostile requests through the real web tier: gunicorn (sync
workers), a private Redis, raw sockets for what an HTTP client library would
refuse to send. Fewer examples than the test-client fuzz; what this adds is
gunicorn's own parsing and the real Redis client.

Invariants: no 5xx (but 503 while Redis is down), no traceback in gunicorn's
output, no worker restarted, and what Redis holds afterwards is exactly the
validly signed webhooks answered 202, each once.
"""

from __future__ import annotations

import socket
import time

import httpx
import pytest
import redis as redis_lib
from hypothesis import HealthCheck, given, settings

from tests.fuzz.strategies import SECRET, WebhookRequest, validly_signed, webhook_requests
from tests.fuzz.support import check_error_shape
from tests.support.processes import start_gunicorn

pytestmark = [pytest.mark.resilience, pytest.mark.integration]

FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
    print_blob=True,
)


@pytest.fixture
def gunicorn(stack_env, tmp_path):
    env = {**stack_env, "CODAT_WEBHOOK_SECRETS": SECRET}
    process = start_gunicorn(env, workers=2, log_dir=tmp_path)
    yield process
    process.stop()


def post(client: httpx.Client, request: WebhookRequest) -> httpx.Response:
    # HTTP strips whitespace around header values (h11 refuses to send it).
    headers = [
        (k.encode("latin-1"), v.strip(" \t").encode("latin-1")) for k, v in request.headers.items()
    ]
    return client.post("/webhooks/codat", content=request.body, headers=headers)


def raw_exchange(port: int, payload: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server answered (e.g. 413) and closed before reading it all
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


RAW_REQUESTS = [
    b"GARBAGE\r\n\r\n",
    b"POST /webhooks/codat HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{}",  # short body
    b"POST /webhooks/codat HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"POST /webhooks/codat HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
    b"POST /webhooks/codat HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    b"POST /webhooks/codat HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Type: application/json\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    b"POST /webhooks/codat HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n",
    b"POST /webhooks/codat HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
    b"POST /webhooks/codat HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 20_000 + b"\r\n\r\n",
    b"POST /webhooks/codat HTTP/1.1\r\nHost: x\r\n"
    + b"".join(b"X-%d: y\r\n" % i for i in range(200))
    + b"\r\n",
    b"POST /webhooks/codat HTTP/1.1\r\nHost: x\r\nwebhook-id: \xff\xfe\r\n"
    b"Content-Length: 0\r\n\r\n",
    b"POST /webhooks/codat?" + b"q" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /api/subscriptions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer test-token\r\n"
    b"Content-Type: application/json\r\nContent-Length: 400001\r\n\r\n"
    + b"[" * 200_000
    + b"1"
    + b"]" * 200_000,
    b"GET /api/companies/%ff%fe HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer test-token\r\n\r\n",
    b"POST /webhooks/codat HTTP/1.0\r\nContent-Type: application/json\r\n\r\n{}",
]


def status_of(raw: bytes) -> int | None:
    try:
        return int(raw.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None


def checked(response: httpx.Response) -> dict | None:
    """Our JSON error shape, unless gunicorn's own parser answered (its
    limits on request line and header sizes come before the app: an HTML 400
    or 431, never a 5xx)."""
    if response.status_code in (400, 431) and "text/html" in response.headers.get(
        "content-type", ""
    ):
        assert b"gunicorn" in response.content.lower() or b"<h1>" in response.content
        return None
    return check_error_shape(response.status_code, response.content)


def assert_gunicorn_clean(process) -> None:
    output = process.stderr_tail(2000) + process.stdout_tail(2000)
    assert "Traceback" not in output, output[-3000:]
    assert "Error handling request" not in output, output[-3000:]
    boots = output.count("Booting worker")
    assert boots == 2, f"gunicorn restarted workers ({boots} boots): {output[-2000:]}"


def test_hostile_webhooks_through_gunicorn(gunicorn, redis_url):
    accepted: set[str] = set()
    conn = redis_lib.Redis.from_url(redis_url)

    @FUZZ
    @given(request=webhook_requests())
    def one(request: WebhookRequest):
        with httpx.Client(base_url=gunicorn.url, timeout=15, trust_env=False) as client:
            response = post(client, request)
        error = checked(response)
        assert response.status_code < 500, (response.status_code, error)
        if response.status_code in (200, 202):
            assert validly_signed(request)
        if response.status_code == 202:
            # The id the receiver (and the svix library) read: svix-id first.
            webhook_id = (
                request.headers.get("svix-id") or request.headers.get("webhook-id") or ""
            ).strip(" \t")
            assert webhook_id not in accepted
            accepted.add(webhook_id)

    one()
    assert conn.xlen("authflow:inbox") == len(accepted)  # no worker runs: all still there
    assert {k.decode().removeprefix("authflow:seen:") for k in conn.keys("authflow:seen:*")} == {
        w[:200] for w in accepted
    }
    for payload in RAW_REQUESTS:
        answer = raw_exchange(int(gunicorn.url.rsplit(":", 1)[1]), payload)
        status = status_of(answer)
        assert status is None or status < 500, answer[:500]
    assert conn.xlen("authflow:inbox") == len(accepted)
    assert_gunicorn_clean(gunicorn)


def test_with_redis_stopped_gunicorn_answers_503_and_stores_nothing(
    gunicorn, redis_server, redis_url
):
    redis_server.stop()
    try:

        @settings(FUZZ, max_examples=40)
        @given(request=webhook_requests())
        def one(request: WebhookRequest):
            with httpx.Client(base_url=gunicorn.url, timeout=15, trust_env=False) as client:
                response = post(client, request)
            error = checked(response)
            if response.status_code >= 500:
                assert (response.status_code, error["code"]) == (503, "storage_unavailable")
                assert validly_signed(request)
            assert response.status_code not in (200, 202)

        one()
        with httpx.Client(base_url=gunicorn.url, timeout=15, trust_env=False) as client:
            assert client.get("/readyz").status_code == 503
            assert client.get("/healthz").status_code == 200
    finally:
        redis_server.start()
    conn = redis_lib.Redis.from_url(redis_url)
    assert conn.dbsize() == 0 or not conn.keys("authflow:seen:*")
    assert_gunicorn_clean(gunicorn)
