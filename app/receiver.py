"""`POST /webhooks/codat`: verify, deduplicate, store, answer in milliseconds.

Checks run cheapest first and nothing is parsed before the signature holds:
size (413), content type (415), the Authorization header if configured and
signature (401), JSON envelope (400). Only then is the raw body stored, and
only a body stored in Redis is answered with a 2xx; anything that fails to
store is a 503, so Codat retries. All further work happens in the workers.
"""

from __future__ import annotations

import hmac
import json
import time

import structlog
from flask import Blueprint, current_app, g, jsonify, request
from marshmallow import Schema, ValidationError, fields
from redis.exceptions import RedisError

from app.errors import error_response
from app.signature import HEADER_NAMES, SignatureRejected, webhook_id_of
from codat_authflow.jobs import enqueue_drain
from codat_authflow.observability.metrics import rejection_outcome
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
    if request.mimetype != "application/json":
        return _reject(415, "unsupported_media_type", "Content-Type must be application/json")

    headers = {name: request.headers[name] for name in HEADER_NAMES if name in request.headers}
    webhook_id = webhook_id_of(headers)[:200]
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

    try:
        acceptance = ext.inbox.accept(webhook_id, body, received_at_ms)
    except RedisError as exc:
        log.error("webhook.unavailable", error=repr(exc))
        g.webhook_outcome = "unavailable"  # counted by app/ops/metrics_view.py
        return error_response(
            503,
            "storage_unavailable",
            "could not store the webhook; retry later",
            headers={"Retry-After": "5"},
        )
    g.webhook_outcome_counted = True  # by the accept script itself
    if not acceptance.queued:
        g.webhook_outcome = "duplicate"
        return jsonify({"status": "duplicate", "webhookId": webhook_id}), 200

    if acceptance.drain_needed:
        try:
            enqueue_drain(ext.redis, ext.settings.queue_name)
        except RedisError as exc:  # stored already; the clock's sweep will drain it
            log.warning("webhook.drain_not_scheduled", error=repr(exc))
    g.webhook_outcome = "queued"  # logged on the request's line (app/ops/request_log.py)
    return jsonify({"status": "queued", "webhookId": webhook_id}), 202


def _describe(exc: Exception) -> tuple[str, object]:
    if isinstance(exc, ValidationError):
        return "the body is not a Codat webhook", exc.messages
    if isinstance(exc, InvalidEvent):
        return str(exc), None
    if isinstance(exc, RecursionError):
        return "the body is nested too deeply", None
    return f"the body is not valid JSON: {exc}", None


def _reject(status: int, code: str, message: str, details: object = None):
    log.warning("webhook.rejected", status=status, reason=code)
    g.webhook_outcome = rejection_outcome(code)
    return error_response(status, code, message, details)
