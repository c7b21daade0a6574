"""What the redirect after Codat's Link flow means.

Codat sends the user's browser back to our redirect URL with reserved
parameters (`statusCode`: 200 success, 201 success with no information about
the connection, 403 user cancelled, 500 error, 501 platform not supported;
`errorMessage`, `statusText`, `companyId`, `connectionId`, `platform`,
`sourceType`, ...). Anyone can type such a URL, so the query string is never
taken as truth about a connection: it only names which connection to check
with Codat (get-connection), and what the user is told is what Codat
confirms. The reported status is kept, labelled as reported, next to what
Codat confirmed.

A 201 names no connection (Codat's example: the user opened Link with a
connection already established and left without doing anything), so there
is nothing to check and nothing is recorded: the outcome is `completed`, a
success, and the host application shows what it knows.

Parameters that are neither Codat's reserved ones nor ours (the host's own,
set on the Link URL with `linkParams` and named in the redirect URL
configured in Codat's portal) are passed through, unread, to
LINK_SUCCESS_URL / LINK_FAILURE_URL (`passthrough_params`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus, urlsplit

import structlog

from codat_authflow.journey.codat import CodatError, CodatRateLimited
from codat_authflow.journey.connections import check_connection
from codat_authflow.journey.events import LINK_CALLBACK
from codat_authflow.journey.service import Journey

log = structlog.get_logger(__name__)

OUTCOME_TTL_SECONDS = 30 * 24 * 3600
CHECK_THROTTLE_SECONDS = 5  # one get-connection per connection in this time
MAX_REPORTED_TEXT = 200
#: Outcomes kept per company (the oldest go first); real companies have a few connections.
MAX_OUTCOMES_PER_COMPANY = 50
#: Codat checks from this public page: at most this many per company and in
#: all, per window (fixed windows, counted in Redis across every web worker).
CHECK_WINDOW_SECONDS = 60
COMPANY_CHECKS_PER_WINDOW = 5
GLOBAL_CHECKS_PER_WINDOW = 60

#: Outcomes that count as success (LINK_SUCCESS_URL); the rest go to LINK_FAILURE_URL.
SUCCESS_OUTCOMES = frozenset({"connected", "pending", "completed"})

#: Codat's reserved redirect parameters (auth-flow/customize/set-up-redirects).
CODAT_RESERVED_PARAMS = frozenset(
    {
        "statusCode", "errorMessage", "statusText", "companyId", "connectionId",
        "integrationId", "sourceId", "platform", "platformName", "sourceType", "clientId",
        "data.company.companyName",
    }
)  # fmt: skip
#: The parameters we add to LINK_SUCCESS_URL / LINK_FAILURE_URL ourselves.
OUR_PARAMS = frozenset({"outcome", "companyId", "connectionId"})
#: Bounds on what is passed through (the URL stays well under browsers' limits).
MAX_PASSTHROUGH_PARAMS = 20
MAX_PASSTHROUGH_NAME = 64
MAX_PASSTHROUGH_VALUE = 500


def passthrough_params(args: Any, target_url: str = "") -> dict[str, str]:
    """The query parameters to pass on to `target_url` (the success or
    failure URL): every one that is not reserved (Codat's or ours) and that
    the target does not already set (its own parameters win), first value of
    each, within the bounds above (others are dropped). Never read for state."""
    fixed = {unquote_plus(p.partition("=")[0]) for p in urlsplit(target_url).query.split("&")}
    passed: dict[str, str] = {}
    for name in args:
        if name in CODAT_RESERVED_PARAMS or name in OUR_PARAMS or name in passed or name in fixed:
            continue
        value = args.get(name)
        if not name or len(name) > MAX_PASSTHROUGH_NAME or not isinstance(value, str):
            continue
        if len(value) > MAX_PASSTHROUGH_VALUE:
            continue
        passed[name] = value
        if len(passed) >= MAX_PASSTHROUGH_PARAMS:
            break
    return passed


def reported_outcome(status_code: int | None) -> str:
    if status_code in (200, 201):
        return "success"
    return {403: "cancelled", 500: "error", 501: "not_supported"}.get(status_code or 0, "unknown")


def decide(reported: str, verified_status: str | None) -> str:
    """Codat's word wins: a connection Codat reports Linked is `connected`
    whatever the query string said; a reported success Codat has not confirmed
    (yet) is `pending`; otherwise the reported outcome stands (it can only make
    things look worse than they are, never better)."""
    if verified_status == "Linked":
        return "connected"
    if reported == "success":
        return "pending"
    return reported


@dataclass(frozen=True)
class CallbackResult:
    outcome: str  # connected, pending, cancelled, error, not_supported, unknown, invalid
    company_id: str | None
    connection_id: str | None
    platform_name: str | None = None
    verified_status: str | None = None
    verified: bool = False  # Codat was asked and answered


def _clip(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    return value[:MAX_REPORTED_TEXT]


def handle_callback(journey: Journey, params: dict[str, Any]) -> CallbackResult:
    """`params`: the validated query string (`companyId` and `connectionId`
    are well-formed UUIDs when present)."""
    company_id, connection_id = params.get("companyId"), params.get("connectionId")
    reported = reported_outcome(params.get("statusCode"))
    if params.get("statusCode") == 201 and not connection_id:
        # Success, and Codat says nothing about a connection: nothing to check.
        log.info("link_callback.outcome", company_id=company_id, outcome="completed")
        return CallbackResult("completed", company_id, None)
    if not company_id or not connection_id:
        return CallbackResult("invalid", company_id, connection_id)
    record = journey.store.get(company_id)
    if record is None:
        log.warning("link_callback.unknown_company", company_id=company_id)
        return CallbackResult("invalid", company_id, connection_id)

    verified, connection = False, None
    if _may_check_with_codat(journey, company_id, connection_id):
        try:
            record, connection = check_connection(
                journey, company_id, connection_id, source=LINK_CALLBACK
            )
            verified = True
        except CodatError as exc:
            log.warning("link_callback.check_failed", company_id=company_id, error_code=exc.code)
            if isinstance(exc, CodatRateLimited):  # reconciliation waits too
                journey.back_off(exc)
    known = record.facts.connection(connection_id)
    if verified and connection is None:
        return CallbackResult("invalid", company_id, connection_id, verified=True)
    if connection is not None:
        status, platform_name = connection.get("status"), connection.get("platformName")
    else:  # not checked just now: what we know already (from webhooks or a recent check)
        status = known.status if known is not None and known.deleted_at is None else None
        platform_name = known.platform_name if known is not None else None

    outcome = decide(reported, status)
    # Recorded only for a connection of this company: one in its facts, or one
    # Codat has just confirmed (check_connection put it in the facts). Random
    # ids from anyone who can type a URL are shown a page and stored nowhere.
    if known is not None or connection is not None:
        record_outcome(
            journey,
            company_id,
            connection_id,
            {
                "outcome": outcome,
                "reported": {
                    "statusCode": params.get("statusCode"),
                    "statusText": _clip(params.get("statusText")),
                    "errorMessage": _clip(params.get("errorMessage")),
                },
                "confirmedStatus": status,
                "checkedWithCodat": verified,
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(journey.now())),
            },
        )
    log.info(
        "link_callback.outcome",
        company_id=company_id,
        connection_id=connection_id,
        outcome=outcome,
        reported_status_code=params.get("statusCode"),
        confirmed_status=status,
        verified=verified,
        recorded=known is not None or connection is not None,
    )
    return CallbackResult(outcome, company_id, connection_id, platform_name, status, verified)


def _may_check_with_codat(journey: Journey, company_id: str, connection_id: str) -> bool:
    """Whether this request may call Codat: once per connection every
    CHECK_THROTTLE_SECONDS, within the company's and the global budget per
    window. The budgets are counted before the per-connection marker is
    written, so a flood of new ids writes no more markers than calls."""
    if journey.codat is None:
        return False
    redis, keys = journey.redis, journey.keys
    if redis.exists(keys.link_checked(connection_id)):
        return False
    window = int(journey.now()) // CHECK_WINDOW_SECONDS
    for key, limit, scope in (
        (keys.link_checks_company(company_id, window), COMPANY_CHECKS_PER_WINDOW, "company"),
        (keys.link_checks_all(window), GLOBAL_CHECKS_PER_WINDOW, "global"),
    ):
        pipe = redis.pipeline(transaction=True)
        pipe.incr(key)
        pipe.expire(key, 2 * CHECK_WINDOW_SECONDS)
        count, _ = pipe.execute()
        if count > limit:
            if count == limit + 1:  # once per window, not once per request
                log.warning("link_callback.checks_throttled", scope=scope, company_id=company_id)
            return False
    return bool(
        redis.set(keys.link_checked(connection_id), "1", nx=True, ex=CHECK_THROTTLE_SECONDS)
    )


def record_outcome(
    journey: Journey, company_id: str, connection_id: str, outcome: dict[str, Any]
) -> None:
    """Keep `outcome` as the connection's latest, and at most
    MAX_OUTCOMES_PER_COMPANY outcomes for the company (the oldest by `at` go)."""
    key = journey.keys.link_outcomes(company_id)
    pipe = journey.redis.pipeline(transaction=True)
    pipe.hset(key, connection_id, json.dumps(outcome, separators=(",", ":")))
    pipe.expire(key, OUTCOME_TTL_SECONDS)
    pipe.hlen(key)
    _, _, size = pipe.execute()
    if size <= MAX_OUTCOMES_PER_COMPANY:
        return
    kept: list[tuple[str, bytes]] = []
    for field, value in journey.redis.hgetall(key).items():
        if field == connection_id.encode():
            continue  # the one just written stays
        try:
            at = str(json.loads(value).get("at") or "")
        except (ValueError, AttributeError):
            at = ""
        kept.append((at, field))
    kept.sort()
    extra = [field for _, field in kept[: len(kept) + 1 - MAX_OUTCOMES_PER_COMPANY]]
    if extra:
        journey.redis.hdel(key, *extra)
