"""`GET /metrics`: the Prometheus exposition (codat_authflow.observability.collector).
(The webhook-outcome counter is the receiver's own: app/receiver.py.)

Protected like `/ops` (basic or bearer, the ops token) unless METRICS_PUBLIC=1.
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.ops.auth import require_ops_auth
from codat_authflow.observability.collector import AuthflowCollector, build_registry
from codat_authflow.observability.metrics import write

bp = Blueprint("metrics", __name__)


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
