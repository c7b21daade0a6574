"""`POST /webhooks/codat`: verify, deduplicate, store, answer in milliseconds.

Checks run cheapest first and nothing is parsed before the signature holds:
size (413), content type (415), the Authorization header if configured and
signature (401), JSON envelope (400). Only then is the raw body stored, and
only a body stored in Redis is answered with a 2xx; anything that fails to
store is a 503, so Codat retries. All further work happens in the workers.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import structlog
from flask import Blueprint, Response, current_app, g, jsonify, request
from marshmallow import Schema, ValidationError, fields
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from werkzeug.exceptions import RequestEntityTooLarge

from app.errors import error_response
from app.signature import HEADER_NAMES, SignatureRejected, webhook_id_of
from codat_authflow.jobs import enqueue_drain
from codat_authflow.observability.metrics import record_unreplicated, record_webhook
from codat_authflow.storage.inbox import Acceptance
from state_machine import InvalidEvent, parse_codat_event

log = structlog.get_logger(__name__)

bp = Blueprint("receiver", __name__)


class WebhookEnvelopeSchema(Schema):
    """The four fields every Codat webhook carries (Codat's `*Webhook` schemas)."""

    id = fields.String(required=True, validate=lambda s: bool(s.strip()))
    eventType = fields.String(required=True, validate=lambda s: bool(s.strip()))
    generatedDate = fields.String(required=True)
    payload = fields.Dict(required=True)

    class Meta:
        unknown = "include"


_envelope = WebhookEnvelopeSchema()


@bp.post("/webhooks/codat")
def receive_codat_webhook():
    ext = current_app.extensions["authflow"]
    received_at_ms = int(time.time() * 1000)

    body = request.get_data(cache=False)  # 413 past MAX_CONTENT_LENGTH
    if _truncated(body):
        raise RequestEntityTooLarge()
    if request.mimetype != "application/json":
        return _reject(415, "unsupported_media_type", "Content-Type must be application/json")

    environ = request.environ  # one lookup, not a header-map search per name
    headers = {name: environ[key] for name, key in _ENVIRON_KEYS if key in environ}
    webhook_id = dedupe_id(webhook_id_of(headers))
    structlog.contextvars.bind_contextvars(webhook_id=webhook_id)

    expected_authorization = ext.settings.webhook_authorization
    if expected_authorization is not None and not hmac.compare_digest(
        request.headers.get("Authorization", "").encode(), expected_authorization.encode()
    ):
        return _reject(401, "unauthorized", "Authorization header does not match")
    try:
        current_app.extensions["verifier"].verify(body, headers)
    except SignatureRejected as exc:
        return _reject(401, exc.reason, exc.message)

    try:
        envelope = _envelope.load(json.loads(body))
        event = parse_codat_event(envelope)
    except (ValueError, ValidationError, RecursionError) as exc:
        return _reject(400, "invalid_body", *_describe(exc))
    structlog.contextvars.bind_contextvars(event_type=event.type, company_id=event.company_id)

    settings = ext.settings
    try:
        acceptance = ext.inbox.accept(
            webhook_id,
            body,
            received_at_ms,
            replicas=settings.redis_min_replicas_ack,
            replica_timeout_ms=settings.redis_replica_ack_timeout_ms,
        )
    except (RedisConnectionError, RedisTimeoutError) as exc:
        log.error("webhook.unavailable", error=repr(exc))
        g.webhook_outcome = "unavailable"
        return error_response(
            503,
            "storage_unavailable",
            "could not store the webhook; retry later",
            headers={"Retry-After": "5"},
        )
    except RedisError as exc:  # Redis answered, with an error: ours to fix, not an outage
        log.exception("webhook.storage_error", error=repr(exc))
        g.webhook_outcome = "error"
        return error_response(500, "storage_error", "Redis refused the write; it has been logged")
    g.webhook_outcome_counted = True  # by the accept script itself
    g.webhook_outcome = "queued" if acceptance.queued else "duplicate"  # on the request's line
    if acceptance.queued and acceptance.drain_needed:
        try:
            enqueue_drain(ext.redis, settings.queue_name)
        except RedisError as exc:  # stored already; the clock's sweep will drain it
            log.warning("webhook.drain_not_scheduled", error=repr(exc))
    if _unreplicated(acceptance, settings.redis_min_replicas_ack):
        return error_response(
            503,
            "storage_unavailable",
            "stored, but not yet on enough replicas; retry later",
            headers={"Retry-After": "5"},
        )
    if not acceptance.queued:
        return jsonify({"status": "duplicate", "webhookId": webhook_id}), 200
    return jsonify({"status": "queued", "webhookId": webhook_id}), 202


def _unreplicated(acceptance: Acceptance, wanted: int) -> bool:
    """REDIS_MIN_REPLICAS_ACK: a 2xx means "on the primary and `wanted`
    replicas". Fewer within the timeout: 503, Codat retries, and the retry
    (a duplicate by then) waits for the replicas again."""
    if acceptance.replicas_acked is None or acceptance.replicas_acked >= wanted:
        return False
    log.warning("webhook.not_replicated", replicas_acked=acceptance.replicas_acked, wanted=wanted)
    ext = current_app.extensions["authflow"]
    record_unreplicated(ext.redis, ext.store.keys.prefix)  # a 503 that waited anyway: no hurry
    return True


#: The signature headers and their WSGI environ keys (`webhook-id` -> HTTP_WEBHOOK_ID).
_ENVIRON_KEYS = tuple((name, "HTTP_" + name.upper().replace("-", "_")) for name in HEADER_NAMES)

MAX_ID_CHARS = 200  # the key budget of `{p}:seen:{webhookId}`


def dedupe_id(webhook_id: str) -> str:
    """The id deduplicated on: the whole id, or, past MAX_ID_CHARS, its
    SHA-256 (two ids sharing their first 200 characters stay two)."""
    if len(webhook_id) <= MAX_ID_CHARS:
        return webhook_id
    return "sha256:" + hashlib.sha256(webhook_id.encode()).hexdigest()


def _truncated(body: bytes) -> bool:
    """A chunked body (no Content-Length) is cut by Werkzeug at
    MAX_CONTENT_LENGTH without a word: if it filled the limit and the client
    has more to send, it is too large, not a bad signature."""
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is not None or limit is None or len(body) < limit:
        return False
    return bool(request.environ["wsgi.input"].read(1))


def _describe(exc: Exception) -> tuple[str, object]:
    if isinstance(exc, ValidationError):
        return "the body is not a Codat webhook", exc.messages
    if isinstance(exc, InvalidEvent):
        return str(exc), None
    if isinstance(exc, RecursionError):
        return "the body is nested too deeply", None
    return f"the body is not valid JSON: {exc}", None


# -- the webhook-outcome metric (authflow_webhooks_received_total{outcome}) ----------
#
# Decided here and nowhere else: the handler names the outcome in `g`, and
# `_count_outcome` counts it once the answer is sent. `queued` and
# `duplicate` are counted by the inbox's accept script itself, atomically
# with the write (`Services.build` hands it the counter).

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
    """The outcome of an answer the handler did not name (a 413 raised while
    reading the body, an unexpected 500)."""
    return {413: "too_large", 503: "unavailable"}.get(
        status, "error" if status >= 500 else "malformed"
    )


@bp.after_request
def _count_outcome(response: Response) -> Response:
    outcome = g.get("webhook_outcome") or status_outcome(response.status_code)
    g.webhook_outcome = outcome  # also logged on the request's line (app/ops/request_log.py)
    if g.get("webhook_outcome_counted"):
        return response
    services = current_app.extensions["authflow"]
    redis, prefix = services.redis, services.store.keys.prefix
    # After the answer is sent: Codat does not wait for our bookkeeping.
    response.call_on_close(lambda: record_webhook(redis, prefix, outcome))
    return response


def _reject(status: int, code: str, message: str, details: object = None):
    log.warning("webhook.rejected", status=status, reason=code)
    g.webhook_outcome = rejection_outcome(code)
    return error_response(status, code, message, details)
