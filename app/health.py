"""`/healthz` (the process answers) and `/readyz` (it can reach Redis). No token."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from redis.exceptions import RedisError

from app.errors import error_response

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    try:
        current_app.extensions["authflow"].redis.ping()
    except RedisError:
        return error_response(503, "not_ready", "Redis cannot be reached")
    return jsonify({"status": "ready"})
