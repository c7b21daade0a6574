"""Our own exceptions for a Codat call that did not give us the answer we needed.

Nothing outside `codat_authflow.journey.codat` sees the SDK's exception classes (or httpx's):
`translate` maps them here, once. Each class carries the HTTP status our own
API answers with and a stable `code`, so `app/api` only has to format them:

| what happened | class | our answer |
| --- | --- | --- |
| no `CODAT_API_KEY` configured | `CodatNotConfigured` | 503 |
| Codat answered 404 for an id the caller named | `CodatNotFound` | 404 |
| Codat answered 429 (rate limit) | `CodatRateLimited` | 503, `Retry-After` (else 60 s) |
| Codat answered 402 (a plan limit, e.g. companies) | `CodatPlanLimit` | 402, with Codat's message |
| Codat answered any other 4xx or 5xx | `CodatRejected` | 502, with Codat's status and message |
| Codat answered 2xx with a body that breaks its own schema | `CodatInvalidResponse` | 502 |
| connect or read timeout | `CodatTimeout` | 504 |
| connection refused, DNS, TLS... | `CodatUnreachable` | 502 |
"""

from __future__ import annotations

import json
import time
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from codat_platform.models.errors import (
    CodatPlatformError,
    ErrorMessage,
    NoResponseError,
    ResponseValidationError,
)

MAX_MESSAGE_CHARS = 300
#: When Codat answers 429 without a usable `Retry-After`, wait this long.
DEFAULT_RETRY_AFTER_SECONDS = 60
#: A `Retry-After` further away than this is taken as this (Codat's quota is daily).
MAX_RETRY_AFTER_SECONDS = 24 * 3600


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


class CodatRateLimited(CodatRejected):
    """Codat answered 429: our client's rate limit is reached. Our caller gets
    503 with `Retry-After` (in seconds, always set); reconciliation pauses."""

    status = 503
    code = "codat_rate_limited"

    @property
    def retry_after_seconds(self) -> int:
        return int(self.retry_after or DEFAULT_RETRY_AFTER_SECONDS)


class CodatPlanLimit(CodatRejected):
    """Codat answered 402: a limit of the Codat plan is reached (e.g. the
    Free plan's 50 companies). Codat's message says which; retrying will not help."""

    status = 402
    code = "codat_plan_limit"


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


def retry_after_seconds(value: str | None, now: float | None = None) -> int:
    """Seconds to wait for an HTTP `Retry-After` (delta-seconds or an HTTP
    date), between 1 and MAX_RETRY_AFTER_SECONDS; the default when absent or
    unreadable."""
    text = (value or "").strip()
    if not text:
        return DEFAULT_RETRY_AFTER_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(text).timestamp() - (now or time.time())
        except (TypeError, ValueError, IndexError, OverflowError):
            return DEFAULT_RETRY_AFTER_SECONDS
    if seconds != seconds:  # NaN
        return DEFAULT_RETRY_AFTER_SECONDS
    return int(min(max(seconds, 1), MAX_RETRY_AFTER_SECONDS) + 0.999)


def _rejected(status: int | None, operation: str) -> tuple[type, str]:
    """The class and the text of our error for Codat's HTTP `status`."""
    if status == 404:
        return CodatNotFound, f"Codat has no such resource ({operation} answered 404)"
    if status == 429:
        return (
            CodatRateLimited,
            f"Codat's rate limit is reached ({operation} answered 429); retry after "
            "the number of seconds in Retry-After",
        )
    if status == 402:
        return (
            CodatPlanLimit,
            f"a limit of the Codat plan is reached ({operation} answered 402)",
        )
    return CodatRejected, f"Codat answered {operation} with HTTP {status}"


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
        cls, text = _rejected(status, operation)
        retry_after = exc.headers.get("retry-after") if exc.headers else None
        if cls is CodatRateLimited:
            retry_after = str(retry_after_seconds(retry_after))
        elif cls is CodatPlanLimit:
            retry_after = None  # retrying will not lift a plan limit
        return cls(
            text + (f": {message}" if message else ""),
            operation=operation,
            codat_status=status,
            codat_message=message,
            correlation_id=correlation_id,
            retry_after=retry_after,
        )
    raise exc
