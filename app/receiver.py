"""`POST /webhooks/codat`: verify, deduplicate, store, answer in milliseconds.

Checks run cheapest first and nothing is parsed before the signature holds:
size (413), content type (415), the Authorization header if configured and
signature (401), JSON envelope (400). Only then is the raw body stored, and
only a body stored in Redis is answered with a 2xx; anything that fails to
store is a 503, so Codat retries. All further work happens in the workers.

Why a WSGI application of its own, in front of Flask (`create_app` mounts
it), and not a Flask view: this is the one endpoint Codat calls for every
event, and it needs nothing Flask adds. Measured in instructions per
webhook (`python -m perf.receiver_cost`), Flask's request context,
dispatch, `before_request`/`after_request` hooks (flask-limiter's among
them) and `jsonify` were a third of the view's cost, and the request line
through the standard library's `logging` another sixth. Everything a client
sees is unchanged: the same error shape as the rest of the app
(`{"error": {"status", "code", "message", "details"?}}`), the same request
line (`app/ops/request_log.py`), the same outcome metric.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wsgi import ClosingIterator, get_input_stream

from app.errors import UNREADABLE_BODY, error_body
from app.ops.request_log import log_request, start_request_context
from app.signature import HEADER_NAMES, SignatureRejected, SignatureVerifier, webhook_id_of
from codat_authflow.bootstrap import Services
from codat_authflow.jobs import enqueue_drain
from codat_authflow.observability.metrics import record_unreplicated, record_webhook
from codat_authflow.storage.inbox import Acceptance
from state_machine import CodatEvent, InvalidEvent, parse_codat_event

log = structlog.get_logger(__name__)

PATH = "/webhooks/codat"
ENDPOINT = "receiver.receive_codat_webhook"  # the name its request line carries

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]


@dataclass
class Answer:
    """What the receiver says, and the outcome counted and logged for it."""

    status: int
    body: dict[str, Any]
    outcome: str | None = None  # None: not a webhook (a GET); nothing counted
    headers: list[tuple[str, str]] = field(default_factory=list)
    counted: bool = False  # True: the accept script counted it, atomically with the write


class WebhookReceiver:
    """The WSGI application that serves `PATH`; every other request goes on to `app`."""

    def __init__(
        self, app: WSGIApp, services: Services, verifier: SignatureVerifier, max_body_bytes: int
    ):
        self.app = app
        self.services = services
        self.settings = services.settings
        self.verifier = verifier
        self.max_body_bytes = max_body_bytes
        self._prefix = services.store.keys.prefix
        authorization = self.settings.webhook_authorization
        self._authorization = authorization.encode() if authorization is not None else None

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != PATH:
            return self.app(environ, start_response)
        started = time.perf_counter()
        start_request_context(environ.get("HTTP_X_REQUEST_ID"))
        answer = self._answer(environ)
        payload = msgspec.json.encode(answer.body)
        log_request(
            method=environ.get("REQUEST_METHOD", ""),
            path=PATH,
            status=answer.status,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
            endpoint=ENDPOINT,
            outcome=answer.outcome,
        )
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
            *answer.headers,
        ]
        start_response(_STATUS_LINES.get(answer.status) or f"{answer.status} Error", headers)
        if answer.outcome is None or answer.counted:
            return [payload]
        # After the answer is sent: Codat does not wait for our bookkeeping.
        outcome, redis, prefix = answer.outcome, self.services.redis, self._prefix
        return ClosingIterator([payload], lambda: record_webhook(redis, prefix, outcome))

    def _answer(self, environ: dict) -> Answer:
        if environ.get("REQUEST_METHOD") != "POST":
            allow = [("Allow", "POST")]
            return _error(405, "method_not_allowed", "only POST is allowed here", None, allow)
        try:
            return self._receive(environ)
        except HTTPException as exc:  # 413 while reading the body; a client that went away
            status = exc.code or 400
            code = (exc.name or "error").lower().replace(" ", "_")
            return _error(status, code, exc.description or "", status_outcome(status))
        except UNREADABLE_BODY as exc:  # a malformed or cut chunked body: the client's fault
            log.warning("request.unreadable_body", error=repr(exc))
            return _error(400, "malformed_body", "the request body could not be read", "malformed")
        except Exception:
            log.exception("request.unhandled_error", method="POST", path=PATH, endpoint=ENDPOINT)
            return _error(500, "internal_error", "unexpected error; it has been logged", "error")

    def _receive(self, environ: dict) -> Answer:
        received_at_ms = int(time.time() * 1000)
        body = self._read_body(environ)
        if _mimetype(environ) != "application/json":
            return _reject(415, "unsupported_media_type", "Content-Type must be application/json")

        headers = {name: environ[key] for name, key in _ENVIRON_KEYS if key in environ}
        webhook_id = dedupe_id(webhook_id_of(headers))
        structlog.contextvars.bind_contextvars(webhook_id=webhook_id)
        if self._authorization is not None and not hmac.compare_digest(
            environ.get("HTTP_AUTHORIZATION", "").encode("utf-8", "surrogateescape"),
            self._authorization,
        ):
            return _reject(401, "unauthorized", "Authorization header does not match")
        try:
            self.verifier.verify(body, headers)
        except SignatureRejected as exc:
            return _reject(401, exc.reason, exc.message)

        try:
            event = read_event(body)
        except EnvelopeRejected as exc:
            return _reject(400, "invalid_body", exc.message, exc.details)
        structlog.contextvars.bind_contextvars(event_type=event.type, company_id=event.company_id)
        return self._store(webhook_id, body, received_at_ms)

    def _read_body(self, environ: dict) -> bytes:
        """The body, or RequestEntityTooLarge past MAX_BODY_BYTES. A chunked body
        (no Content-Length) is cut at the limit by Werkzeug without a word: if it
        filled the limit and the client has more to send, it is too large, not a
        bad signature."""
        body = get_input_stream(environ, max_content_length=self.max_body_bytes).read()
        if (
            environ.get("CONTENT_LENGTH") in (None, "")
            and len(body) >= self.max_body_bytes
            and environ["wsgi.input"].read(1)
        ):
            raise RequestEntityTooLarge()
        return body

    def _store(self, webhook_id: str, body: bytes, received_at_ms: int) -> Answer:
        settings, services = self.settings, self.services
        wanted = settings.redis_min_replicas_ack
        try:
            acceptance = services.inbox.accept(
                webhook_id,
                body,
                received_at_ms,
                replicas=wanted,
                replica_timeout_ms=settings.redis_replica_ack_timeout_ms,
            )
        except (RedisConnectionError, RedisTimeoutError) as exc:
            log.error("webhook.unavailable", error=repr(exc))
            return _unavailable("could not store the webhook; retry later")
        except RedisError as exc:  # Redis answered, with an error: ours to fix, not an outage
            log.exception("webhook.storage_error", error=repr(exc))
            message = "Redis refused the write; it has been logged"
            return _error(500, "storage_error", message, "error")
        if acceptance.queued and acceptance.drain_needed:
            try:
                enqueue_drain(services.redis, settings.queue_name)
            except RedisError as exc:  # stored already; the clock's sweep will drain it
                log.warning("webhook.drain_not_scheduled", error=repr(exc))
        if self._unreplicated(acceptance, wanted):
            return _unavailable("stored, but not yet on enough replicas; retry later")
        outcome = "queued" if acceptance.queued else "duplicate"
        answer = {"status": outcome, "webhookId": webhook_id}
        # Counted by the accept script itself, unless it had to wait for replicas.
        return Answer(202 if acceptance.queued else 200, answer, outcome, counted=wanted <= 0)

    def _unreplicated(self, acceptance: Acceptance, wanted: int) -> bool:
        """REDIS_MIN_REPLICAS_ACK: a 2xx means "on the primary and `wanted`
        replicas". Fewer within the timeout: 503, Codat retries, and the retry
        (a duplicate by then) waits for the replicas again."""
        if acceptance.replicas_acked is None or acceptance.replicas_acked >= wanted:
            return False
        log.warning(
            "webhook.not_replicated", replicas_acked=acceptance.replicas_acked, wanted=wanted
        )
        record_unreplicated(self.services.redis, self._prefix)  # a 503 that waited: no hurry
        return True


# -- the envelope ------------------------------------------------------------------


class WebhookEnvelope(msgspec.Struct):
    """The four fields every Codat webhook carries (Codat's `*Webhook` schemas).
    Others are ignored here; the stored body keeps them."""

    id: str | msgspec.UnsetType = msgspec.UNSET
    eventType: str | msgspec.UnsetType = msgspec.UNSET
    generatedDate: str | msgspec.UnsetType = msgspec.UNSET
    payload: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET


_decode_envelope = msgspec.json.Decoder(WebhookEnvelope).decode


class EnvelopeRejected(Exception):
    def __init__(self, message: str, details: object = None):
        super().__init__(message)
        self.message, self.details = message, details


def read_event(body: bytes) -> CodatEvent:
    """The event a signed body carries, in one C parse (msgspec), or
    `EnvelopeRejected`. What msgspec refuses (a lone surrogate escape, a number
    past a double's range: valid JSON all the same) goes to the standard
    library's parser, which decides, so nothing it accepts is refused here."""
    try:
        envelope = _decode_envelope(body)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        try:
            envelope = msgspec.convert(json.loads(body), WebhookEnvelope)
        except msgspec.ValidationError as exc:
            raise EnvelopeRejected(f"the body is not a Codat webhook: {exc}") from None
        except RecursionError:
            raise EnvelopeRejected("the body is nested too deeply") from None
        except ValueError as exc:
            raise EnvelopeRejected(f"the body is not valid JSON: {exc}") from None
    missing = [
        name
        for name in WebhookEnvelope.__struct_fields__
        if getattr(envelope, name) is msgspec.UNSET
        or (name != "payload" and not getattr(envelope, name).strip())
    ]
    if missing:
        raise EnvelopeRejected(
            "the body is not a Codat webhook",
            {name: ["Missing data for required field."] for name in missing},
        )
    try:
        return parse_codat_event(msgspec.structs.asdict(envelope))
    except InvalidEvent as exc:
        raise EnvelopeRejected(str(exc)) from None


# -- small parts -------------------------------------------------------------------

#: The signature headers and their WSGI environ keys (`webhook-id` -> HTTP_WEBHOOK_ID).
_ENVIRON_KEYS = tuple((name, "HTTP_" + name.upper().replace("-", "_")) for name in HEADER_NAMES)

#: "202 Accepted", ...: the status lines WSGI wants, from Werkzeug's table.
_STATUS_LINES = {code: f"{code} {phrase}" for code, phrase in HTTP_STATUS_CODES.items()}

MAX_ID_CHARS = 200  # the key budget of `{p}:seen:{webhookId}`


def dedupe_id(webhook_id: str) -> str:
    """The id deduplicated on: the whole id, or, past MAX_ID_CHARS, its
    SHA-256 (two ids sharing their first 200 characters stay two)."""
    if len(webhook_id) <= MAX_ID_CHARS:
        return webhook_id
    return "sha256:" + hashlib.sha256(webhook_id.encode()).hexdigest()


def _mimetype(environ: dict) -> str:
    return environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()


def _reject(status: int, code: str, message: str, details: object = None) -> Answer:
    log.warning("webhook.rejected", status=status, reason=code)
    return _error(status, code, message, rejection_outcome(code), details=details)


def _unavailable(message: str) -> Answer:
    retry = [("Retry-After", "5")]
    return _error(503, "storage_unavailable", message, "unavailable", retry)


def _error(
    status: int,
    code: str,
    message: str,
    outcome: str | None,
    headers: list[tuple[str, str]] | None = None,
    details: object = None,
) -> Answer:
    return Answer(status, error_body(status, code, message, details), outcome, headers or [])


# -- the webhook-outcome metric (authflow_webhooks_received_total{outcome}) ----------
#
# Decided here and nowhere else: each answer names its outcome, and
# `WebhookReceiver` counts it once the answer is sent. `queued` and
# `duplicate` are counted by the inbox's accept script itself, atomically
# with the write (`Services.build` hands it the counter), unless the webhook
# had to wait for replicas (REDIS_MIN_REPLICAS_ACK): then the 2xx is counted
# after the wait, and a 503 for too few replicas is `unavailable`.

_REJECTIONS = {
    "bad_signature": "bad_signature",
    "missing_headers": "bad_signature",
    "unauthorized": "bad_signature",
    "stale": "stale",
    "invalid_body": "malformed",
    "unsupported_media_type": "malformed",
}


def rejection_outcome(code: str) -> str:
    """The outcome counted for a webhook rejected with error `code`."""
    return _REJECTIONS.get(code, "malformed")


def status_outcome(status: int) -> str:
    """The outcome of an answer no check named (a 413 raised while reading the body)."""
    return {413: "too_large", 503: "unavailable"}.get(
        status, "error" if status >= 500 else "malformed"
    )
