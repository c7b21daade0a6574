"""Our own exceptions for a Codat call that did not give us the answer we needed.

Nothing outside `codat_authflow.journey.codat` sees the SDK's exception classes (or httpx's):
`translate` maps them here, once. Each class carries the HTTP status our own
API answers with and a stable `code`, so `app/api` only has to format them:

| what happened | class | our answer |
| --- | --- | --- |
| no `CODAT_API_KEY` configured | `CodatNotConfigured` | 503 |
| Codat answered 404 for an id the caller named | `CodatNotFound` | 404 |
| Codat answered any other 4xx or 5xx | `CodatRejected` | 502, with Codat's status and message |
| Codat answered 2xx with a body that breaks its own schema | `CodatInvalidResponse` | 502 |
| connect or read timeout | `CodatTimeout` | 504 |
| connection refused, DNS, TLS... | `CodatUnreachable` | 502 |
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from codat_platform.models.errors import (
    CodatPlatformError,
    ErrorMessage,
    NoResponseError,
    ResponseValidationError,
)

MAX_MESSAGE_CHARS = 300


class CodatError(Exception):
    """A Codat call failed. `status` and `code` are what our API answers."""

    status = 502
    code = "codat_error"

    def __init__(
        self,
        message: str,
        *,
        operation: str,
        codat_status: int | None = None,
        codat_message: str | None = None,
        correlation_id: str | None = None,
        retry_after: str | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.operation = operation
        self.codat_status = codat_status
        self.codat_message = codat_message
        self.correlation_id = correlation_id
        self.retry_after = retry_after

    def details(self) -> dict[str, Any]:
        details: dict[str, Any] = {"operation": self.operation}
        if self.codat_status is not None:
            details["codatStatus"] = self.codat_status
        if self.codat_message:
            details["codatMessage"] = self.codat_message
        if self.correlation_id:
            details["correlationId"] = self.correlation_id
        return details


class CodatNotConfigured(CodatError):
    status = 503
    code = "codat_not_configured"


class CodatRejected(CodatError):
    status = 502
    code = "codat_error"


class CodatNotFound(CodatRejected):
    status = 404
    code = "not_found_at_codat"


class CodatInvalidResponse(CodatError):
    status = 502
    code = "codat_invalid_response"


class CodatTimeout(CodatError):
    status = 504
    code = "codat_timeout"


class CodatUnreachable(CodatError):
    status = 502
    code = "codat_unreachable"


def not_configured(operation: str) -> CodatNotConfigured:
    return CodatNotConfigured(
        "Codat's API is not configured on this service (set CODAT_API_KEY); "
        "webhook processing is unaffected",
        operation=operation,
    )


def _short(text: str | None) -> str | None:
    if not text:
        return None
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


def _codat_message(exc: CodatPlatformError) -> tuple[str | None, str | None]:
    """Codat's own `error` text and `correlationId`, from the typed error or the raw body."""
    data = getattr(exc, "data", None)
    if data is not None:
        return _short(getattr(data, "error", None)), getattr(data, "correlation_id", None)
    try:
        body = json.loads(exc.body) if exc.body else None
    except ValueError:
        body = None
    if isinstance(body, dict):
        return _short(body.get("error") or body.get("message")), body.get("correlationId")
    return _short(exc.body), None


def translate(exc: BaseException, operation: str) -> CodatError:
    """The `CodatError` for an exception raised by an SDK call."""
    if isinstance(exc, CodatError):
        return exc
    if isinstance(exc, httpx.TimeoutException):
        return CodatTimeout(
            f"Codat did not answer {operation} in time; nothing was changed here, retry later",
            operation=operation,
        )
    if isinstance(exc, httpx.TransportError | NoResponseError):
        return CodatUnreachable(
            f"Codat could not be reached for {operation} ({type(exc).__name__}); retry later",
            operation=operation,
        )
    if isinstance(exc, ResponseValidationError):
        return CodatInvalidResponse(
            f"Codat answered {operation} with a body that does not match its API schema",
            operation=operation,
            codat_status=exc.status_code or None,
            codat_message=_short(str(exc.cause) if exc.cause else None),
        )
    if isinstance(exc, ErrorMessage | CodatPlatformError):
        status = exc.status_code or None
        message, correlation_id = _codat_message(exc)
        cls = CodatNotFound if status == 404 else CodatRejected
        text = (
            f"Codat has no such resource ({operation} answered 404)"
            if status == 404
            else f"Codat answered {operation} with HTTP {status}"
        )
        return cls(
            text + (f": {message}" if message else ""),
            operation=operation,
            codat_status=status,
            codat_message=message,
            correlation_id=correlation_id,
            retry_after=exc.headers.get("retry-after") if exc.headers else None,
        )
    raise exc
