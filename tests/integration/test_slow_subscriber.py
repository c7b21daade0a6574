"""Issue 12, defect 2: a subscriber that drips its answer one byte at a time
cannot hold a delivery past the sender's 10 s cap (httpx's timeouts apply per
read). Real gunicorn and RQ workers; a real socket server as the subscriber."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from codat_authflow.delivery.sender import TOTAL_TIMEOUT_SECONDS
from tests.support.lifecycles import build
from tests.support.processes import TEST_API_TOKEN, TEST_WEBHOOK_SECRET
from tests.support.signing import encode_body, signed_headers

pytestmark = pytest.mark.integration
AUTH = {"Authorization": f"Bearer {TEST_API_TOKEN}"}


@pytest.fixture
def stack_env(stack_env):
    return {
        **stack_env,
        "ALLOW_PRIVATE_SUBSCRIBER_URLS": "1",
        "DELIVERY_RETRY_SCHEDULE": "0,1",
        # Not the circuit breaker's test (tests/unit/test_delivery_pump.py): with
        # it, each later attempt waits a 15 s cool-down and goes one at a time.
        "DELIVERY_BREAKER_FAILURES": "100",
    }


@pytest.fixture
def dripping_subscriber() -> Iterator[str]:
    """Accepts, reads the request, then sends its status line and headers one
    byte every 0.5 s (never finishing within a minute)."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def handle(conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                head = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 200
                for i in range(len(head)):
                    if stop.is_set():
                        return
                    conn.sendall(head[i : i + 1])
                    time.sleep(0.5)
            except OSError:
                return

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/hooks"
    stop.set()
    server.close()


def test_a_dripping_subscriber_is_cut_off_at_the_cap_and_the_attempt_counts(
    running_stack, dripping_subscriber
):
    base_url = running_stack.base_url
    with httpx.Client(base_url=base_url, headers=AUTH, timeout=10) as api:
        created = api.post(
            "/api/subscriptions", json={"url": dripping_subscriber, "eventTypes": ["*"]}
        )
        assert created.status_code == 201, created.text
        subscription_id = created.json()["id"]
        life, _ = build("happy_path")
        for n, body in enumerate(life.events):
            raw = encode_body(body)
            headers = signed_headers(TEST_WEBHOOK_SECRET, raw, webhook_id=f"msg_{n}")
            assert httpx.post(
                f"{base_url}/webhooks/codat", content=raw, headers=headers
            ).status_code in (200, 202)

        def deliveries():
            return api.get(f"/api/subscriptions/{subscription_id}/deliveries").json()["deliveries"]

        # Before the fix no attempt was ever recorded: each ran until RQ
        # killed the job (20 s), which was handed back and hung again.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            listed = deliveries()
            if listed and all(d["status"] == "dead" for d in listed):
                break
            time.sleep(0.5)
        listed = deliveries()
        assert listed, "no deliveries were created"
        assert all(d["status"] == "dead" for d in listed), listed
        for delivery in listed:
            assert len(delivery["attempts"]) == 2, delivery  # the whole (test) schedule: 0, 1 s
            for attempt in delivery["attempts"]:
                assert attempt["error"] == "timeout: total", attempt
                assert attempt["latencyMs"] <= (TOTAL_TIMEOUT_SECONDS + 1) * 1000, attempt
