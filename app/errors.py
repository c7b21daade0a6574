"""Every error leaves as JSON: `{"error": {"status", "code", "message", "details"?}}`."""

from __future__ import annotations

from typing import Any

import structlog
from flask import Flask, jsonify
from redis.exceptions import RedisError
from werkzeug.exceptions import HTTPException

log = structlog.get_logger(__name__)


def error_response(status: int, code: str, message: str, details: Any = None, headers=None):
    body: dict[str, Any] = {"status": status, "code": code, "message": message}
    if details is not None:
        body["details"] = details
    response = jsonify({"error": body})
    response.status_code = status
    if headers:
        response.headers.update(headers)
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        return error_response(exc.code or 500, code, exc.description or exc.name)

    @app.errorhandler(RedisError)
    def storage_unavailable(exc: RedisError):
        log.error("redis.unavailable", error=repr(exc))
        return error_response(
            503,
            "storage_unavailable",
            "Redis cannot be reached; retry later",
            headers={"Retry-After": "5"},
        )

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("request.unhandled_error")
        return error_response(500, "internal_error", "unexpected error; it has been logged")
