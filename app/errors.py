"""Every error leaves as JSON: `{"error": {"status", "code", "message", "details"?}}`."""

from __future__ import annotations

from typing import Any

import structlog
from flask import Flask, jsonify, request
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from werkzeug.exceptions import HTTPException

log = structlog.get_logger(__name__)

try:  # gunicorn parses a chunked body only as the app reads it
    from gunicorn.http.errors import NoMoreData, ParseException

    UNREADABLE_BODY: tuple[type[Exception], ...] = (ParseException, NoMoreData)
except ImportError:  # another WSGI server
    UNREADABLE_BODY = ()


def error_body(status: int, code: str, message: str, details: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"status": status, "code": code, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error}


def error_response(status: int, code: str, message: str, details: Any = None, headers=None):
    response = jsonify(error_body(status, code, message, details))
    response.status_code = status
    if headers:
        response.headers.update(headers)
    return response


class ApiError(Exception):
    """Refuse a request with our error shape: raise it from a view or a parser."""

    def __init__(self, status: int, code: str, message: str, details: Any = None, headers=None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details, self.headers = details, headers


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def refused(exc: ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        return error_response(exc.code or 500, code, exc.description or exc.name)

    @app.errorhandler(RedisError)
    def storage_unavailable(exc: RedisError):
        if not isinstance(exc, RedisConnectionError | RedisTimeoutError):
            log.exception("redis.error", path=request.path, error=repr(exc))
            return error_response(500, "storage_error", "Redis answered with an error; logged")
        log.error("redis.unavailable", error=repr(exc))
        return error_response(
            503,
            "storage_unavailable",
            "Redis cannot be reached; retry later",
            headers={"Retry-After": "5"},
        )

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        if isinstance(exc, UNREADABLE_BODY):  # a malformed or cut chunked body: the client's fault
            log.warning(
                "request.unreadable_body", method=request.method, path=request.path, error=repr(exc)
            )
            return error_response(400, "malformed_body", "the request body could not be read")
        # The traceback names the request it broke, not just the code it ran.
        log.exception(
            "request.unhandled_error",
            method=request.method,
            path=request.path,
            endpoint=request.endpoint,
        )
        return error_response(500, "internal_error", "unexpected error; it has been logged")
