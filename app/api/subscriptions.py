"""Subscriptions of downstream services to our notifications, and their deliveries.

POST/GET/PATCH/DELETE `/api/subscriptions[/<id>]`, `POST .../rotate-secret`,
`GET .../deliveries`, and `POST /api/deliveries/replay`.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from flask import current_app, jsonify
from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from app.api.framework import Blueprint
from app.errors import ApiError
from codat_authflow.bootstrap import Services
from codat_authflow.delivery.attempts import replay_dead_letters
from codat_authflow.delivery.url_guard import MAX_URL_LENGTH, UnsafeURL, check_url
from codat_authflow.storage.deliveries import Delivery
from codat_authflow.storage.subscriptions import Subscription
from state_machine.notifications import NOTIFICATION_TYPES

bp = Blueprint("subscriptions", __name__)

EVENT_TYPES = (*NOTIFICATION_TYPES, "*")
SUBSCRIPTION_ID = validate.Regexp(r"^sub_[0-9a-f]{32}$", error="not a subscription id")


def _event_types(value: list[str]) -> None:
    unknown = sorted(set(value) - set(EVENT_TYPES))
    if unknown:
        raise ValidationError(
            f"unknown event type(s) {', '.join(unknown)}; valid: {', '.join(EVENT_TYPES)}"
        )


class _SubscriberURL(Schema):
    """A subscriber's url must pass the SSRF guard; it is kept normalised."""

    @post_load
    def _safe_url(self, data: dict, **_: Any) -> dict:
        if "url" in data:
            allow_private = current_app.extensions[
                "authflow"
            ].settings.allow_private_subscriber_urls
            try:
                data["url"] = check_url(data["url"], allow_private=allow_private).url
            except UnsafeURL as exc:
                raise ValidationError(f"the url cannot be used: {exc}", field_name="url") from exc
        return data


class SubscriptionCreateSchema(_SubscriberURL):
    url = fields.String(required=True, validate=validate.Length(min=1, max=MAX_URL_LENGTH))
    eventTypes = fields.List(
        fields.String(), required=True, validate=[validate.Length(min=1, max=20), _event_types]
    )
    description = fields.String(load_default=None, validate=validate.Length(max=500))


class SubscriptionPatchSchema(_SubscriberURL):
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


# -- responses (documentation) ------------------------------------------------------


class BreakerOut(Schema):
    state = fields.String(metadata={"description": "closed, open or half_open (one probe)"})
    consecutiveFailures = fields.Integer()
    openUntil = fields.String(allow_none=True)


class SubscriptionOut(Schema):
    id = fields.String()
    url = fields.String()
    eventTypes = fields.List(fields.String())
    description = fields.String(allow_none=True)
    enabled = fields.Boolean()
    disabledReason = fields.String(allow_none=True)
    failingSince = fields.String(allow_none=True)
    createdAt = fields.String()
    breaker = fields.Nested(BreakerOut)


class SubscriptionCreated(SubscriptionOut):
    secret = fields.String(metadata={"description": "whsec_...; shown only once"})


class SecretRotated(SubscriptionCreated):
    previousSecretsValidUntil = fields.String(allow_none=True)


class SubscriptionList(Schema):
    subscriptions = fields.List(fields.Nested(SubscriptionOut))


class DeliveryAttempt(Schema):
    at = fields.String()
    statusCode = fields.Integer(allow_none=True)
    latencyMs = fields.Integer(allow_none=True)
    error = fields.String(allow_none=True)


class DeliveryOut(Schema):
    id = fields.String()
    notificationId = fields.String()
    type = fields.String()
    companyId = fields.String(allow_none=True)
    status = fields.String()
    createdAt = fields.String()
    nextAttemptAt = fields.String(allow_none=True)
    replays = fields.Integer()
    attempts = fields.List(fields.Nested(DeliveryAttempt))


class DeliveryList(Schema):
    deliveries = fields.List(fields.Nested(DeliveryOut))


class Replayed(Schema):
    replayed = fields.Integer()
    deliveryIds = fields.List(fields.String())


# -- path and query -----------------------------------------------------------------


class SubscriptionPath(Schema):
    subscription_id = fields.String(
        data_key="subscriptionId", required=True, validate=SUBSCRIPTION_ID
    )


class DeliveriesQuery(Schema):
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))


def _context() -> Services:
    return current_app.extensions["authflow"]


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
        "breaker": {
            "state": subscription.breaker_state(time.time()),
            "consecutiveFailures": subscription.breaker_failures,
            "openUntil": _iso(subscription.breaker_open_until),
        },
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
    subscription = _context().subscriptions.get(subscription_id)
    if subscription is None:
        raise _not_found(subscription_id)
    return subscription


def _not_found(subscription_id: str) -> ApiError:
    return ApiError(404, "subscription_not_found", f"no subscription {subscription_id!r}")


@bp.post("/subscriptions")
@bp.arguments(SubscriptionCreateSchema)
@bp.response(201, SubscriptionCreated, description="Created; the secret is shown only here")
@bp.errors(400, 401, 413, 415)
def create_subscription(data: dict[str, Any]):
    """Subscribe a URL to our notifications"""
    subscription = _context().subscriptions.create(
        data["url"], data["eventTypes"], data["description"]
    )
    # The secret is shown once, here; afterwards only rotate-secret reveals a new one.
    return jsonify(
        {**subscription_view(subscription), "secret": subscription.secrets[0].secret}
    ), 201


@bp.get("/subscriptions")
@bp.response(200, SubscriptionList, description="Every subscription")
@bp.errors(401)
def list_subscriptions():
    """The subscriptions, without their secrets"""
    return jsonify(
        {"subscriptions": [subscription_view(s) for s in _context().subscriptions.all()]}
    )


@bp.get("/subscriptions/<subscription_id>")
@bp.path(SubscriptionPath)
@bp.response(200, SubscriptionOut, description="The subscription, without its secret")
@bp.errors(400, 401, 404)
def get_subscription(subscription_id: str):
    """One subscription"""
    return jsonify(subscription_view(_found(subscription_id)))


@bp.patch("/subscriptions/<subscription_id>")
@bp.path(SubscriptionPath)
@bp.arguments(SubscriptionPatchSchema)
@bp.response(200, SubscriptionOut, description="The subscription as changed")
@bp.errors(400, 401, 404, 413, 415)
def update_subscription(data: dict[str, Any], subscription_id: str):
    """Change a subscription's url, event types, description or enabled flag"""
    _found(subscription_id)
    updated = _context().subscriptions.update(
        subscription_id,
        url=data.get("url"),
        event_types=data.get("eventTypes"),
        description=data.get("description"),
        enabled=data.get("enabled"),
    )
    if updated is None:
        raise _not_found(subscription_id)
    return jsonify(subscription_view(updated))


@bp.delete("/subscriptions/<subscription_id>")
@bp.path(SubscriptionPath)
@bp.response(204, description="Deleted")
@bp.errors(400, 401, 404)
def delete_subscription(subscription_id: str):
    """Delete a subscription; nothing more is delivered to it"""
    _found(subscription_id)
    context = _context()
    context.subscriptions.delete(subscription_id)
    context.deliveries.forget_subscription(subscription_id)  # cancelled, and expire
    return "", 204


@bp.post("/subscriptions/<subscription_id>/rotate-secret")
@bp.path(SubscriptionPath)
@bp.response(200, SecretRotated, description="The new secret; the old ones sign for a day")
@bp.errors(400, 401, 404)
def rotate_secret(subscription_id: str):
    """Replace the signing secret (the previous one stays valid for a day)"""
    _found(subscription_id)
    rotated = _context().subscriptions.rotate_secret(subscription_id)
    if rotated is None:
        raise _not_found(subscription_id)
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
@bp.path(SubscriptionPath)
@bp.arguments(DeliveriesQuery, location="query")
@bp.response(200, DeliveryList, description="The latest deliveries, newest first")
@bp.errors(400, 401, 404)
def list_deliveries(query: dict[str, Any], subscription_id: str):
    """A subscription's deliveries and their attempts"""
    _found(subscription_id)
    deliveries = _context().deliveries.for_subscription(subscription_id, query["limit"])
    return jsonify({"deliveries": [delivery_view(d) for d in deliveries]})


@bp.post("/deliveries/replay")
@bp.arguments(ReplaySchema, required=False)
@bp.response(200, Replayed, description="How many dead letters were queued again")
@bp.errors(400, 401, 413, 415)
def replay(data: dict[str, Any]):
    """Deliver dead letters again, filtered by subscription, company and time"""
    replayed = replay_dead_letters(
        _context(),
        subscription_id=data.get("subscriptionId"),
        company_id=data.get("companyId"),
        since=data["since"].timestamp() if data.get("since") else None,
        until=data["until"].timestamp() if data.get("until") else None,
    )
    return jsonify({"replayed": len(replayed), "deliveryIds": replayed})
