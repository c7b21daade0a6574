"""Issue 12, defect 3: idle clients must not stall the web tier. 50
connections each send a request's headers announcing a 100 kB body and then
go quiet; real gunicorn (app/gunicorn_conf.py, 2 workers) must still answer
`/healthz` and a signed webhook at once, every time.

"At once" here is under a second: a stalled tier (sync workers) answered
only after the idle clients' read timeouts, or never. The figure itself
(under 100 ms) is a benchmark's, measured apart from the suite's own load:
`python -m perf.idle_clients` (docs/benchmarks.md)."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.lifecycles import Lifecycle
from tests.support.processes import TEST_WEBHOOK_SECRET, start_gunicorn
from tests.support.signing import encode_body, signed_headers

pytestmark = pytest.mark.integration

IDLE = 50
ROUNDS = 10
LIMIT_MS = 1000.0  # a stall, not a figure: see the module's docstring


def open_idle(url: str) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=5)
    sock.sendall(
        b"POST /webhooks/codat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000\r\n\r\n{"
    )
    return sock


def test_idle_clients_leave_healthz_and_webhooks_answering(stack_env, tmp_path):
    web = start_gunicorn(stack_env, workers=2, log_dir=tmp_path)
    idle = []
    try:
        idle = [open_idle(web.url) for _ in range(IDLE)]
        time.sleep(0.5)  # they are all accepted and waiting for their bodies
        health, hooks = [], []
        with httpx.Client(base_url=web.url, timeout=5) as client:
            client.get("/healthz")  # a first connection (warm-up)
            for _ in range(ROUNDS):
                started = time.perf_counter()
                assert client.get("/healthz").status_code == 200
                health.append((time.perf_counter() - started) * 1000)
                body = encode_body(Lifecycle().company("company.created"))
                headers = signed_headers(TEST_WEBHOOK_SECRET, body)
                started = time.perf_counter()
                status = client.post("/webhooks/codat", content=body, headers=headers).status_code
                hooks.append((time.perf_counter() - started) * 1000)
                assert status == 202
        print(
            f"{IDLE} idle connections: /healthz max {max(health):.1f} ms, "
            f"signed webhook max {max(hooks):.1f} ms over {ROUNDS} requests each"
        )
        assert max(health) < LIMIT_MS and max(hooks) < LIMIT_MS, (health, hooks)
    finally:
        for sock in idle:
            sock.close()
        web.stop()


def test_a_chunked_body_over_the_limit_is_413_not_a_bad_signature(stack_env, tmp_path):
    """Issue 12: gunicorn hands a chunked body to the app without a
    Content-Length, and Werkzeug cut it at 1 MiB silently, so it was reported
    as a bad signature."""
    web = start_gunicorn(stack_env, workers=1, log_dir=tmp_path)
    try:
        body = b'{"id": "' + b"x" * (2 * 1024 * 1024) + b'"}'
        headers = signed_headers(TEST_WEBHOOK_SECRET, body)

        def chunks():
            for start in range(0, len(body), 65536):
                yield body[start : start + 65536]

        with httpx.Client(base_url=web.url, timeout=10) as client:
            response = client.post(
                "/webhooks/codat",
                content=chunks(),  # an iterator: httpx sends Transfer-Encoding: chunked
                headers={**headers, "Content-Type": "application/json"},
            )
        assert response.status_code == 413, response.text
        assert response.json()["error"]["status"] == 413
    finally:
        web.stop()
