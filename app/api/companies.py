"""`GET /api/companies/<companyId>`: a company's state, connections and history."""

from __future__ import annotations

from typing import Any

from flask import current_app, jsonify
from marshmallow import Schema, fields, validate

from app.api import schemas
from app.api.framework import Blueprint
from app.errors import ApiError
from codat_authflow.storage.codec import CompanyRecord
from state_machine.facts import DataTypeFacts
from state_machine.readiness import ANY_DATA, ReadinessGate, assess

bp = Blueprint("companies", __name__)

COMPANY_ID = validate.Regexp(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$", error="not a company id")


class TrackedCompanyPath(Schema):
    """Any id a webhook may have brought (not only Codat's UUIDs)."""

    company_id = fields.String(
        data_key="companyId",
        required=True,
        validate=COMPANY_ID,
        metadata={"description": "Codat's company id"},
    )


@bp.get("/companies/<company_id>")
@bp.path(TrackedCompanyPath)
@bp.response(200, schemas.Company, description="The company as the state machine knows it")
@bp.errors(400, 401, 404)
def get_company(company_id: str):
    """A company's state, connections, initial sync and history"""
    store = current_app.extensions["authflow"].store
    record = store.get(company_id)
    if record is None:
        raise ApiError(404, "company_not_found", f"no company {company_id!r} is known")
    return jsonify(company_view(record, store.gate))


def company_view(record: CompanyRecord, gate: ReadinessGate = ANY_DATA) -> dict[str, Any]:
    """The company as the API and the CLI show it. `readiness` says why the
    company is (not) ready under `gate`; each connection lists what Codat's
    reads said about each of its data types."""
    facts = record.facts
    last_error = facts.last_error
    readiness = assess(facts, gate)
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
                "dataTypes": [_data_type_view(d) for d in c.data_types],
            }
            for c in facts.connections
        ],
        "readiness": {
            "readyDataTypes": list(gate.data_types),
            "met": readiness.met,
            "connectionIds": sorted(readiness.basis),
            "missingDataTypes": list(readiness.missing),
            "failing": [
                {"connectionId": connection_id, "dataType": data_type, "status": status}
                for connection_id, data_type, status in readiness.failing
            ],
        },
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


def _data_type_view(d: DataTypeFacts) -> dict[str, Any]:
    return {
        "dataType": d.data_type,
        "status": d.status,
        "lastReadAt": d.last_read_at,
        "issues": _issues(d.issues),
        "firstCompleteAt": d.first_complete_at,
        "initialReadAt": d.initial_read_at,
        "initialCompleteAt": d.initial_complete_at,
        "recordsModifiedAt": d.modified_at,
        "lastErrorStatus": d.error_status,
        "lastErrorAt": d.error_key[0] if d.error_key else None,
        "lastErrorIssues": _issues(d.error_issues),
    }


def _issues(issues) -> list[dict[str, Any]]:
    return [{"type": i.type, "message": i.message} for i in issues]


def _error_view(error) -> dict[str, Any] | None:
    if error is None:
        return None
    return {
        "statusCode": error.status_code,
        "statusText": error.status_text,
        "errorMessage": error.error_message,
        "at": error.at,
    }
