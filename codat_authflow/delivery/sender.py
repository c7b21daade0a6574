"""One signed POST to a subscriber, per the Standard Webhooks specification.

Headers `webhook-id` (the notification id: stable across retries and
replays), `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256>`
computed by the `standardwebhooks` library, one signature per active secret
(two during a rotation), so any Standard Webhooks or Svix verifier accepts it.

Timeouts are explicit: connecting, and the whole exchange. Redirects are not
followed (a redirect is a failure, so it cannot lead past the SSRF guard).
"""

from __future__ import annotations

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


def make_client() -> httpx.Client:
    return httpx.Client(
        timeout=httpx.Timeout(TOTAL_TIMEOUT_SECONDS, connect=CONNECT_TIMEOUT_SECONDS),
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
        "Host": checked.host if checked.port in (80, 443) else f"{checked.host}:{checked.port}",
    }
    # Connect to the address that was checked, not to a fresh DNS answer.
    pinned = httpx.URL(url).copy_with(host=checked.address)
    extensions = {"sni_hostname": checked.host} if checked.scheme == "https" else {}
    deadline = started + TOTAL_TIMEOUT_SECONDS
    try:
        request = client.build_request(
            "POST", pinned, content=body.encode(), headers=headers, extensions=extensions
        )
        response = client.send(request, stream=True)
        try:
            received = 0
            for chunk in response.iter_bytes():
                received += len(chunk)
                if received >= MAX_RESPONSE_BYTES or time.monotonic() > deadline:
                    break
        finally:
            response.close()
    except httpx.TimeoutException as exc:
        return AttemptResult(False, None, elapsed_ms(), f"timeout: {exc.__class__.__name__}")
    except httpx.HTTPError as exc:
        return AttemptResult(False, None, elapsed_ms(), f"{exc.__class__.__name__}: {exc}"[:300])
    if time.monotonic() > deadline:
        return AttemptResult(False, response.status_code, elapsed_ms(), "timeout: total")
    ok = 200 <= response.status_code < 300
    error = None if ok else f"HTTP {response.status_code}"
    return AttemptResult(ok, response.status_code, elapsed_ms(), error)
