"""`GET /metrics`: the Prometheus exposition (codat_authflow.observability.collector), and
the count of webhooks by outcome, recorded once the answer has been sent.

Protected like `/ops` (basic or bearer, the ops token) unless METRICS_PUBLIC=1.
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.ops.auth import require_ops_auth
from codat_authflow.observability.collector import AuthflowCollector, build_registry
from codat_authflow.observability.metrics import record_webhook, write

bp = Blueprint("metrics", __name__)

RECEIVER_ENDPOINT = "receiver.receive_codat_webhook"


@bp.before_request
def _protect():
    if current_app.extensions["authflow"].settings.metrics_public:
        return None
    return require_ops_auth()


@bp.get("/metrics")
def metrics():
    registry = current_app.extensions["authflow_metrics_registry"]
    services = current_app.extensions["authflow"]
    write(services.redis, [])  # this process's counts kept while Redis was away, if any
    return Response(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


def install_metrics(app: Flask) -> None:
    services = app.extensions["authflow"]
    collector = AuthflowCollector(
        services.redis,
        services.store.keys,
        (services.settings.queue_name, services.settings.delivery_queue_name),
        dead_deliveries_key=services.deliveries.dead,
    )
    app.extensions["authflow_metrics_registry"] = build_registry(collector)
    app.register_blueprint(bp)
    app.after_request(_count_webhook)


def webhook_outcome(status: int) -> str:
    """The outcome of a webhook request the receiver did not name itself
    (a 413 raised while reading the body, an unexpected 500)."""
    return {413: "too_large", 503: "unavailable"}.get(
        status, "error" if status >= 500 else "malformed"
    )


def _count_webhook(response: Response) -> Response:
    if request.endpoint != RECEIVER_ENDPOINT:
        return response
    outcome = g.get("webhook_outcome") or webhook_outcome(response.status_code)
    g.webhook_outcome = outcome
    if g.get("webhook_outcome_counted"):
        return response  # queued and duplicate: counted by the inbox's accept script
    services = current_app.extensions["authflow"]
    redis, prefix = services.redis, services.store.keys.prefix
    # After the answer is sent: Codat does not wait for our bookkeeping.
    response.call_on_close(lambda: record_webhook(redis, prefix, outcome))
    return response
