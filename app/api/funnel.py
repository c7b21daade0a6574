"""`GET /api/funnel?from=&to=&sourceType=`: the authorization funnel of the
companies first seen in [from, to) (see `codat_authflow.funnel.compute` for the
definitions). `from`/`to` are ISO 8601 dates or date-times (UTC unless they
say otherwise); the default is the last 30 days, the longest period 366 days.
`sourceType` (Accounting, Banking, Commerce, ...) keeps only companies with a
connection of that type.

Registered by `app.ops.init_ops` on its own blueprint (same bearer token as
the rest of `/api`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from flask import Blueprint, current_app, jsonify, request

from app.auth import require_api_token
from app.errors import error_response
from codat_authflow.funnel.compute import Funnel, compute_funnel
from codat_authflow.storage.funnel import cohort, load_journeys

bp = Blueprint("funnel", __name__, url_prefix="/api")
bp.before_request(require_api_token)

DEFAULT_DAYS = 30
MAX_DAYS = 366
MAX_SOURCE_TYPE = 40


class FunnelQueryError(ValueError):
    pass


@dataclass(frozen=True)
class FunnelQuery:
    since: datetime
    until: datetime
    source_type: str | None


def _moment(raw: str, name: str) -> datetime:
    text = raw.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise FunnelQueryError(f"{name} must be an ISO 8601 date or date-time") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_query(args: dict[str, str], now: datetime | None = None) -> FunnelQuery:
    now = now or datetime.now(UTC)
    until = _moment(args["to"], "to") if args.get("to") else now
    since = _moment(args["from"], "from") if args.get("from") else until - timedelta(DEFAULT_DAYS)
    if since >= until:
        raise FunnelQueryError("from must be before to")
    if until - since > timedelta(days=MAX_DAYS):
        raise FunnelQueryError(f"the period is limited to {MAX_DAYS} days")
    source_type = (args.get("sourceType") or "").strip() or None
    if source_type is not None and (
        len(source_type) > MAX_SOURCE_TYPE or not source_type.replace("_", "").isalnum()
    ):
        raise FunnelQueryError("sourceType must be a word such as Accounting or Banking")
    return FunnelQuery(since.astimezone(UTC), until.astimezone(UTC), source_type)


def compute(query: FunnelQuery) -> Funnel:
    services = current_app.extensions["authflow"]
    keys = services.store.keys
    ids = cohort(services.redis, keys, query.since.timestamp(), query.until.timestamp())
    return compute_funnel(load_journeys(services.redis, keys, ids), source_type=query.source_type)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def funnel_view(query: FunnelQuery, funnel: Funnel) -> dict[str, Any]:
    return {
        "from": _iso(query.since),
        "to": _iso(query.until),
        "sourceType": query.source_type,
        "cohort": "companies first seen in [from, to), followed until now",
        **funnel.to_json(),
    }


@bp.get("/funnel")
def get_funnel():
    try:
        query = parse_query(request.args.to_dict())
    except FunnelQueryError as exc:
        return error_response(400, "invalid_query", str(exc))
    return jsonify(funnel_view(query, compute(query)))
