"""A downstream subscriber for tests, benchmarks and demos: a real HTTP server
(in a thread) that verifies every request with the `standardwebhooks`
library and the subscription's secret, and records what it received.

Its behaviour can be switched while it runs: answer 2xx, answer 500, hang,
or be down altogether (socket closed, connections refused).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.support.processes import free_port


@dataclass
class Received:
    webhook_id: str
    envelope: dict[str, Any]
    at: float


@dataclass
class SubscriberState:
    secret: str | None = None
    mode: str = "ok"  # ok | fail | hang
    fail_next: int = 0
    hang_seconds: float = 30.0
    received: list[Received] = field(default_factory=list)
    rejected: int = 0
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _handler(state: SubscriberState):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # http.server writes headers and body separately; with Nagle on, a
        # kept-alive client waits ~40 ms (delayed ACK) for every answer.
        disable_nagle_algorithm = True

        def log_message(self, *args: Any) -> None:  # keep test output quiet
            pass

        def _answer(self, status: int, body: bytes = b"{}") -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with state.lock:
                state.requests += 1
                mode = state.mode
                if state.fail_next > 0:
                    state.fail_next -= 1
                    mode = "fail"
            if mode == "hang":
                time.sleep(state.hang_seconds)
            if mode != "ok":
                self._answer(500, b'{"error":"subscriber failing on purpose"}')
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                Webhook(state.secret or "").verify(body, headers)
            except (WebhookVerificationError, ValueError) as exc:
                with state.lock:
                    state.rejected += 1
                self._answer(401, json.dumps({"error": str(exc)}).encode())
                return
            with state.lock:
                state.received.append(
                    Received(headers["webhook-id"], json.loads(body), time.time())
                )
            self._answer(200)

    return Handler


class Subscriber:
    def __init__(self, secret: str | None = None, port: int | None = None):
        self.state = SubscriberState(secret=secret)
        self.port = port or free_port()
        self._server: ThreadingHTTPServer | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self) -> None:
        if self._server is not None:
            return
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self.state))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Go down: further connections are refused until `start()`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def set(self, **changes: Any) -> None:
        with self.state.lock:
            for name, value in changes.items():
                setattr(self.state, name, value)

    @property
    def received(self) -> list[Received]:
        with self.state.lock:
            return list(self.state.received)

    def of_type(self, kind: str) -> list[Received]:
        return [r for r in self.received if r.envelope["type"] == kind]

    def wait_for(self, predicate: Callable[[Subscriber], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return
            time.sleep(0.05)
        raise AssertionError(
            f"subscriber: condition not met within {timeout}s; received "
            f"{len(self.received)} ({self.state.requests} requests, "
            f"{self.state.rejected} rejected)"
        )

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
