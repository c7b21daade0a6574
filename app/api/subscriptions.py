"""Subscriptions of downstream services to our notifications, and their deliveries.

POST/GET/PATCH/DELETE `/api/subscriptions[/<id>]`, `POST .../rotate-secret`,
`GET .../deliveries`, and `POST /api/deliveries/replay`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from app.errors import error_response
from codat_authflow.bootstrap import Services
from codat_authflow.delivery.attempts import replay_dead_letters
from codat_authflow.delivery.url_guard import MAX_URL_LENGTH, UnsafeURL, check_url
from codat_authflow.storage.deliveries import Delivery
from codat_authflow.storage.subscriptions import Subscription
from state_machine.notifications import NOTIFICATION_TYPES

bp = Blueprint("subscriptions", __name__)

EVENT_TYPES = (*NOTIFICATION_TYPES, "*")
MAX_JSON_BYTES = 64 * 1024
SUBSCRIPTION_ID = validate.Regexp(r"^sub_[0-9a-f]{32}$", error="not a subscription id")


def _event_types(value: list[str]) -> None:
    unknown = sorted(set(value) - set(EVENT_TYPES))
    if unknown:
        raise ValidationError(
            f"unknown event type(s) {', '.join(unknown)}; valid: {', '.join(EVENT_TYPES)}"
        )


class SubscriptionCreateSchema(Schema):
    url = fields.String(required=True, validate=validate.Length(min=1, max=MAX_URL_LENGTH))
    eventTypes = fields.List(
        fields.String(), required=True, validate=[validate.Length(min=1, max=20), _event_types]
    )
    description = fields.String(load_default=None, validate=validate.Length(max=500))


class SubscriptionPatchSchema(Schema):
    url = fields.String(validate=validate.Length(min=1, max=MAX_URL_LENGTH))
    eventTypes = fields.List(
        fields.String(), validate=[validate.Length(min=1, max=20), _event_types]
    )
    description = fields.String(validate=validate.Length(max=500))
    enabled = fields.Boolean(truthy={True}, falsy={False})

    @validates_schema
    def _not_empty(self, data: dict, **_: Any) -> None:
        if not data:
            raise ValidationError("give at least one of url, eventTypes, description, enabled")


class ReplaySchema(Schema):
    subscriptionId = fields.String(validate=SUBSCRIPTION_ID)
    companyId = fields.String(validate=validate.Length(min=1, max=100))
    # "from" and "to" are the JSON names; keys are remapped with data_key.
    since = fields.AwareDateTime(data_key="from", default_timezone=UTC)
    until = fields.AwareDateTime(data_key="to", default_timezone=UTC)


def _json_body(schema: Schema) -> dict:
    if request.content_length is not None and request.content_length > MAX_JSON_BYTES:
        raise _BadRequest(413, "payload_too_large", f"bodies are limited to {MAX_JSON_BYTES} bytes")
    if not request.is_json:
        raise _BadRequest(415, "unsupported_media_type", "Content-Type must be application/json")
    try:
        data = request.get_json(silent=True)
    except RecursionError:  # silent=True only covers ValueError: deep nesting got through
        raise _BadRequest(400, "invalid_body", "the body is nested too deeply") from None
    if not isinstance(data, dict):
        raise _BadRequest(400, "invalid_body", "the body must be a JSON object")
    try:
        return schema.load(data)
    except ValidationError as exc:
        raise _BadRequest(400, "invalid_body", "the body is not valid", exc.messages) from exc


class _BadRequest(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None):
        self.args = (status, code, message, details)


@bp.errorhandler(_BadRequest)
def _bad_request(exc: _BadRequest):
    return error_response(*exc.args)


def _context() -> Services:
    return current_app.extensions["authflow"]


def _checked_url(url: str) -> str:
    allow_private = current_app.extensions["authflow"].settings.allow_private_subscriber_urls
    try:
        return check_url(url, allow_private=allow_private).url
    except UnsafeURL as exc:
        raise _BadRequest(
            400, "invalid_body", "the url cannot be used", {"url": [str(exc)]}
        ) from exc


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def subscription_view(subscription: Subscription) -> dict[str, Any]:
    return {
        "id": subscription.id,
        "url": subscription.url,
        "eventTypes": list(subscription.event_types),
        "description": subscription.description,
        "enabled": subscription.enabled,
        "disabledReason": subscription.disabled_reason,
        "failingSince": _iso(subscription.failing_since),
        "createdAt": _iso(subscription.created_at),
    }


def delivery_view(delivery: Delivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "notificationId": delivery.notification_id,
        "type": delivery.type,
        "companyId": delivery.company_id,
        "status": delivery.status,
        "createdAt": _iso(delivery.created_at),
        "nextAttemptAt": _iso(delivery.next_attempt_at),
        "replays": delivery.replays,
        "attempts": [
            {
                "at": _iso(a.at),
                "statusCode": a.status_code,
                "latencyMs": a.latency_ms,
                "error": a.error,
            }
            for a in delivery.attempts
        ],
    }


def _found(subscription_id: str) -> Subscription:
    try:
        SUBSCRIPTION_ID(subscription_id)
    except ValidationError as exc:
        raise _BadRequest(400, "invalid_subscription_id", str(exc.messages[0])) from exc
    subscription = _context().subscriptions.get(subscription_id)
    if subscription is None:
        raise _BadRequest(404, "subscription_not_found", f"no subscription {subscription_id!r}")
    return subscription


@bp.post("/subscriptions")
def create_subscription():
    data = _json_body(SubscriptionCreateSchema())
    url = _checked_url(data["url"])
    subscription = _context().subscriptions.create(url, data["eventTypes"], data["description"])
    # The secret is shown once, here; afterwards only rotate-secret reveals a new one.
    return jsonify(
        {**subscription_view(subscription), "secret": subscription.secrets[0].secret}
    ), 201


@bp.get("/subscriptions")
def list_subscriptions():
    return jsonify(
        {"subscriptions": [subscription_view(s) for s in _context().subscriptions.all()]}
    )


@bp.get("/subscriptions/<subscription_id>")
def get_subscription(subscription_id: str):
    return jsonify(subscription_view(_found(subscription_id)))


@bp.patch("/subscriptions/<subscription_id>")
def update_subscription(subscription_id: str):
    _found(subscription_id)
    data = _json_body(SubscriptionPatchSchema())
    if "url" in data:
        data["url"] = _checked_url(data["url"])
    updated = _context().subscriptions.update(
        subscription_id,
        url=data.get("url"),
        event_types=data.get("eventTypes"),
        description=data.get("description"),
        enabled=data.get("enabled"),
    )
    if updated is None:
        raise _BadRequest(404, "subscription_not_found", f"no subscription {subscription_id!r}")
    return jsonify(subscription_view(updated))


@bp.delete("/subscriptions/<subscription_id>")
def delete_subscription(subscription_id: str):
    _found(subscription_id)
    _context().subscriptions.delete(subscription_id)
    return "", 204


@bp.post("/subscriptions/<subscription_id>/rotate-secret")
def rotate_secret(subscription_id: str):
    _found(subscription_id)
    rotated = _context().subscriptions.rotate_secret(subscription_id)
    if rotated is None:
        raise _BadRequest(404, "subscription_not_found", f"no subscription {subscription_id!r}")
    subscription, secret = rotated
    return jsonify(
        {
            **subscription_view(subscription),
            "secret": secret,
            "previousSecretsValidUntil": _iso(
                max((s.expires_at or 0) for s in subscription.secrets) or None
            ),
        }
    )


@bp.get("/subscriptions/<subscription_id>/deliveries")
def list_deliveries(subscription_id: str):
    _found(subscription_id)
    limit = request.args.get("limit", "100")
    if not limit.isdigit() or not 1 <= int(limit) <= 1000:
        raise _BadRequest(400, "invalid_query", "limit must be an integer from 1 to 1000")
    deliveries = _context().deliveries.for_subscription(subscription_id, int(limit))
    return jsonify({"deliveries": [delivery_view(d) for d in deliveries]})


@bp.post("/deliveries/replay")
def replay():
    data = _json_body(ReplaySchema()) if request.content_length else {}
    replayed = replay_dead_letters(
        _context(),
        subscription_id=data.get("subscriptionId"),
        company_id=data.get("companyId"),
        since=data["since"].timestamp() if data.get("since") else None,
        until=data["until"].timestamp() if data.get("until") else None,
    )
    return jsonify({"replayed": len(replayed), "deliveryIds": replayed})
