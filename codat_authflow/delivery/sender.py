"""One signed POST to a subscriber, per the Standard Webhooks specification.

Headers `webhook-id` (the notification id: stable across retries and
replays), `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256>`
computed by the `standardwebhooks` library, one signature per active secret
(two during a rotation), so any Standard Webhooks or Svix verifier accepts it.

Timeouts are explicit: connecting, and the whole exchange. httpx's timeouts
apply to each read, so a server sending its headers a byte at a time would
hold an attempt as long as it liked; a watchdog timer shuts the exchange's
socket down at TOTAL_TIMEOUT_SECONDS instead, and the attempt fails as
"timeout: total". (Connections are not kept alive, so every exchange has its
own socket for the watchdog to close.) Redirects are not followed (a redirect
is a failure, so it cannot lead past the SSRF guard).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from standardwebhooks.webhooks import Webhook

from codat_authflow.delivery.url_guard import UnsafeURL, check_url

CONNECT_TIMEOUT_SECONDS = 3.0
TOTAL_TIMEOUT_SECONDS = 10.0
MAX_RESPONSE_BYTES = 4096


@dataclass(frozen=True)
class AttemptResult:
    ok: bool
    status_code: int | None
    latency_ms: int
    error: str | None = None


def signature_header(secrets: list[str], msg_id: str, moment: datetime, body: str) -> str:
    return " ".join(Webhook(secret).sign(msg_id, moment, body) for secret in secrets)


class _Watchdog:
    """Shuts the exchange's socket down at the deadline; the blocked read then
    ends at once. The socket is learnt from httpcore's `trace` extension."""

    def __init__(self, seconds: float):
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self.fired = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def trace(self, event: str, info: dict) -> None:
        if event not in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            return
        stream = info.get("return_value")
        sock = stream.get_extra_info("socket") if stream is not None else None
        with self._lock:
            self._socket = sock
            fired = self.fired
        if fired:
            _shut(sock)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            sock = self._socket
        _shut(sock)


def _shut(sock: socket.socket | None) -> None:
    if sock is None:
        return
    with contextlib.suppress(OSError):  # already closed: the exchange ended on its own
        sock.shutdown(socket.SHUT_RDWR)


def host_header(host: str, port: int) -> str:
    """`Host` for a checked URL: an IPv6 literal is bracketed (RFC 9110 §7.2)."""
    name = f"[{host}]" if ":" in host else host
    return name if port in (80, 443) else f"{name}:{port}"


def make_client() -> httpx.Client:
    return httpx.Client(
        timeout=httpx.Timeout(TOTAL_TIMEOUT_SECONDS, connect=CONNECT_TIMEOUT_SECONDS),
        # One socket per exchange, so that the watchdog closes only its own.
        limits=httpx.Limits(max_keepalive_connections=0),
        follow_redirects=False,
        trust_env=False,  # no proxy from the environment between us and the check
        headers={"User-Agent": "codat-authflow-webhooks/1"},
    )


def send(
    client: httpx.Client,
    url: str,
    body: str,
    msg_id: str,
    secrets: list[str],
    *,
    allow_private: bool,
) -> AttemptResult:
    started = time.monotonic()

    def elapsed_ms() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        checked = check_url(url, allow_private=allow_private)
    except UnsafeURL as exc:
        return AttemptResult(False, None, elapsed_ms(), f"refused: {exc}")
    moment = datetime.now(UTC)
    headers = {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": signature_header(secrets, msg_id, moment, body),
        "Host": host_header(checked.host, checked.port),
    }
    # Connect to the address that was checked, not to a fresh DNS answer.
    pinned = httpx.URL(url).copy_with(host=checked.address)
    extensions: dict = {"sni_hostname": checked.host} if checked.scheme == "https" else {}
    with _Watchdog(max(0.0, started + TOTAL_TIMEOUT_SECONDS - time.monotonic())) as watchdog:
        extensions["trace"] = watchdog.trace
        try:
            status_code = _exchange(client, pinned, body, headers, extensions)
        except httpx.HTTPError as exc:
            if watchdog.fired:
                return AttemptResult(False, None, elapsed_ms(), "timeout: total")
            if isinstance(exc, httpx.TimeoutException):
                error = f"timeout: {exc.__class__.__name__}"
            else:
                error = f"{exc.__class__.__name__}: {exc}"[:300]
            return AttemptResult(False, None, elapsed_ms(), error)
    if watchdog.fired:
        return AttemptResult(False, status_code, elapsed_ms(), "timeout: total")
    ok = 200 <= status_code < 300
    error = None if ok else f"HTTP {status_code}"
    return AttemptResult(ok, status_code, elapsed_ms(), error)


def _exchange(
    client: httpx.Client, url: httpx.URL, body: str, headers: dict, extensions: dict
) -> int:
    """Send, read at most MAX_RESPONSE_BYTES of the answer; its status code."""
    request = client.build_request(
        "POST", url, content=body.encode(), headers=headers, extensions=extensions
    )
    response = client.send(request, stream=True)
    try:
        received = 0
        for chunk in response.iter_bytes():
            received += len(chunk)
            if received >= MAX_RESPONSE_BYTES:
                break
    finally:
        response.close()
    return response.status_code
