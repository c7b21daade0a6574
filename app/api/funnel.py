"""`GET /api/funnel?from=&to=&sourceType=`: the authorization funnel of the
companies first seen in [from, to) (see `codat_authflow.funnel.compute` for the
definitions). `from`/`to` are ISO 8601 dates or date-times (UTC unless they
say otherwise); the default is the last 30 days, the longest period 366 days.
`sourceType` (Accounting, Banking, Commerce, ...) keeps only companies with a
connection of that type.

`parse_query` also reads the query of the `/ops/funnel` page.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from flask import current_app, jsonify
from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load

from app.api.framework import Blueprint
from codat_authflow.funnel.compute import Funnel, compute_funnel
from codat_authflow.storage.funnel import cohort, load_journeys

bp = Blueprint("funnel", __name__)

DEFAULT_DAYS = 30
MAX_DAYS = 366
MAX_SOURCE_TYPE = 40


class FunnelQueryError(ValueError):
    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


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
        raise FunnelQueryError(f"{name} must be an ISO 8601 date or date-time", name) from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_query(args: dict[str, str], now: datetime | None = None) -> FunnelQuery:
    now = now or datetime.now(UTC)
    until = _moment(args["to"], "to") if args.get("to") else now
    try:
        since = (
            _moment(args["from"], "from") if args.get("from") else until - timedelta(DEFAULT_DAYS)
        )
        since, until = since.astimezone(UTC), until.astimezone(UTC)  # year 0 in UTC raises
    except OverflowError as exc:
        raise FunnelQueryError("dates must fall in years 0001..9999 in UTC", "from") from exc
    if since >= until:
        raise FunnelQueryError("from must be before to", "from")
    if until - since > timedelta(days=MAX_DAYS):
        raise FunnelQueryError(f"the period is limited to {MAX_DAYS} days", "from")
    source_type = (args.get("sourceType") or "").strip() or None
    if source_type is not None and (
        len(source_type) > MAX_SOURCE_TYPE or not source_type.replace("_", "").isalnum()
    ):
        raise FunnelQueryError(
            "sourceType must be a word such as Accounting or Banking", "sourceType"
        )
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


class FunnelQuerySchema(Schema):
    """The funnel's query; other parameters are ignored, as they always were."""

    class Meta:
        unknown = EXCLUDE

    since = fields.String(
        data_key="from",
        metadata={"description": "ISO 8601 date or date-time; default: to - 30 days"},
    )
    until = fields.String(
        data_key="to", metadata={"description": "ISO 8601 date or date-time; default now"}
    )
    sourceType = fields.String(metadata={"description": "Accounting, Banking, Commerce, ..."})

    @post_load
    def _query(self, data: dict[str, str], **_: Any) -> FunnelQuery:
        args = {
            "from": data.get("since"),
            "to": data.get("until"),
            "sourceType": data.get("sourceType"),
        }
        try:
            return parse_query({k: v for k, v in args.items() if v is not None})
        except FunnelQueryError as exc:
            raise ValidationError(str(exc), field_name=exc.field) from exc


class FunnelOut(Schema):
    """The funnel's steps, conversions and times (see codat_authflow.funnel.compute)."""

    class Meta:
        unknown = EXCLUDE

    from_ = fields.String(data_key="from")
    to = fields.String()
    sourceType = fields.String(allow_none=True)
    cohort = fields.String()
    steps = fields.List(fields.Dict())


@bp.get("/funnel", tags=["funnel"])
@bp.arguments(FunnelQuerySchema, location="query")
@bp.response(200, FunnelOut, description="The funnel of the cohort")
@bp.errors(400, 401)
def get_funnel(query: FunnelQuery):
    """The authorization funnel of the companies first seen in [from, to)"""
    return jsonify(funnel_view(query, compute(query)))
