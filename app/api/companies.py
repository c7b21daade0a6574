"""`GET /api/companies/<companyId>`: a company's state, connections and history."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify
from marshmallow import Schema, ValidationError, fields, validate

from app.errors import error_response
from storage.codec import CompanyRecord

bp = Blueprint("companies", __name__)

COMPANY_ID = validate.Regexp(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$", error="not a company id")


class CompanyPathSchema(Schema):
    companyId = fields.String(required=True, validate=COMPANY_ID)


_path = CompanyPathSchema()


@bp.get("/companies/<company_id>")
def get_company(company_id: str):
    try:
        _path.load({"companyId": company_id})
    except ValidationError as exc:
        return error_response(400, "invalid_company_id", "companyId is malformed", exc.messages)
    record = current_app.extensions["authflow"].store.get(company_id)
    if record is None:
        return error_response(404, "company_not_found", f"no company {company_id!r} is known")
    return jsonify(company_view(record))


def company_view(record: CompanyRecord) -> dict[str, Any]:
    facts = record.facts
    last_error = facts.last_error
    return {
        "companyId": facts.company_id,
        "name": facts.name,
        "description": facts.description,
        "state": record.state.value,
        "connections": [
            {
                "id": c.id,
                "status": "Deleted" if c.deleted_at else c.status,
                "sourceType": c.source_type,
                "platformKey": c.platform_key,
                "platformName": c.platform_name,
                "integrationId": c.integration_id,
                "created": c.created,
                "deletedAt": c.deleted_at,
                "lastError": _error_view(c.last_error),
            }
            for c in facts.connections
        ],
        "initialSync": {
            "startedAt": facts.sync_started_at,
            "completedAt": facts.initial_sync_completed_at,
        },
        "lastError": _error_view(last_error),
        "deletedAt": facts.deleted_at,
        "firstSeenAt": record.first_seen_at,
        "updatedAt": record.updated_at,
        "history": [h.to_json() for h in record.history],
    }


def _error_view(error) -> dict[str, Any] | None:
    if error is None:
        return None
    return {
        "statusCode": error.status_code,
        "statusText": error.status_text,
        "errorMessage": error.error_message,
        "at": error.at,
    }
