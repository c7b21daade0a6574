"""One JSON line per request: `{"event": "request", "method", "path",
"status", "duration_ms", ...}`, with whatever the handler bound to the log
context (the receiver binds `webhook_id`, `event_type` and `company_id`;
routes with a `<company_id>` get it bound here), so one webhook can be
followed from receipt (its `request` line, `outcome` queued or duplicate)
through the worker's `event.applied` / `company.transition` lines to `delivery.*`.

gunicorn's own access log would repeat each request in another format, so
the Procfile no longer asks for it (`--access-logfile`).
"""

from __future__ import annotations

import time

import structlog
from flask import Flask, Response, g, request

log = structlog.get_logger("authflow.request")

REQUEST_ID_HEADER = "X-Request-ID"


def install_request_logging(app: Flask) -> None:
    app.before_request(_start)
    app.after_request(_finish)


def start_request_context(request_id: str | None) -> None:
    """A request's log context: nothing left over from the thread's last
    request, and the caller's X-Request-ID (bounded) if it sent one. Also
    called by the webhook receiver, which runs before Flask."""
    structlog.contextvars.clear_contextvars()
    if request_id:
        structlog.contextvars.bind_contextvars(request_id=request_id[:100])


def _start() -> None:
    g.request_started = time.perf_counter()
    start_request_context(request.headers.get(REQUEST_ID_HEADER))
    company_id = (request.view_args or {}).get("company_id")
    if isinstance(company_id, str):
        structlog.contextvars.bind_contextvars(company_id=company_id[:100])


def _finish(response: Response) -> Response:
    started = g.get("request_started")
    log_request(
        method=request.method,
        path=request.path,
        status=response.status_code,
        duration_ms=round((time.perf_counter() - started) * 1000, 2) if started else None,
        endpoint=request.endpoint,
    )
    return response


def log_request(
    *,
    method: str,
    path: str,
    status: int,
    duration_ms: float | None,
    endpoint: str | None = None,
    outcome: str | None = None,
) -> None:
    """The request's line; also written by the webhook receiver (app/receiver.py),
    which runs before Flask, with its `outcome`."""
    fields: dict[str, object] = {
        "method": method,
        "path": path,
        "status": status,
        "duration_ms": duration_ms,
    }
    if endpoint:
        fields["endpoint"] = endpoint
    if outcome:
        fields["outcome"] = outcome
    (log.error if status >= 500 else log.info)("request", **fields)
