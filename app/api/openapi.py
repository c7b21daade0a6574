"""`GET /api/openapi.json`: the OpenAPI 3 document of the API, built with
apispec from the same marshmallow schemas that validate the requests.

Endpoints describe themselves with `document(path, method, ...)` next to
their view (paths relative to `/api`); the document is assembled once, on
first request.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, jsonify

from app.api import schemas

bp = Blueprint("openapi", __name__)

_operations: list[tuple[str, str, dict[str, Any]]] = []

ERROR_RESPONSES = {
    "400": "The request is malformed; `details` names each bad field",
    "401": "Missing or wrong bearer token",
    "404": "Unknown company, connection or platform",
    "409": "The request conflicts with the company's current connections or state",
    "413": "The body is larger than API_MAX_BODY_BYTES",
    "415": "The body is not application/json",
    "502": "Codat refused the call, failed, or answered outside its own schema; "
    "`details` has Codat's status, message and correlation id",
    "503": "CODAT_API_KEY is not configured, or Redis is unreachable",
    "504": "Codat did not answer in time; nothing was changed",
}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def document(
    path: str,
    method: str,
    *,
    summary: str,
    description: str = "",
    tags: tuple[str, ...] = (),
    path_params: dict[str, str] | None = None,
    query: type | None = None,
    body: type | None = None,
    responses: dict[str, tuple[str, type | None]],
    errors: tuple[str, ...] = ("400", "401", "502", "503", "504"),
    public: bool = False,
) -> None:
    """Describe one operation. `responses`: status -> (description, schema or None)."""
    operation: dict[str, Any] = {"summary": summary, "tags": list(tags)}
    if description:
        operation["description"] = description
    parameters: list[dict[str, Any]] = [
        {"in": "path", "name": name, "required": True, "schema": {"type": "string"},
         "description": text}
        for name, text in (path_params or {}).items()
    ]  # fmt: skip
    if query is not None:
        parameters.append({"in": "query", "schema": query})
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    operation["responses"] = {
        status: (
            {"description": text, "content": {"application/json": {"schema": schema}}}
            if schema is not None
            else {"description": text}
        )
        for status, (text, schema) in responses.items()
    }
    for status in errors:
        operation["responses"].setdefault(status, _error(ERROR_RESPONSES[status]))
    if public:
        operation["security"] = []
    _operations.append((path, method.lower(), operation))


@cache
def openapi_document() -> dict[str, Any]:
    spec = APISpec(
        title="codat-authflow",
        version="1",
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={
            "description": "The authorization journey over Codat's Platform API, and the "
            "state of each company as Codat's webhooks, our API calls and reconciliation "
            "establish it."
        },
        servers=[{"url": "/api"}],
        security=[{"bearerAuth": []}],
    )
    spec.components.security_scheme(
        "bearerAuth",
        {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <API_TOKEN>"},
    )
    spec.components.schema("Error", schema=schemas.Error)
    by_path: dict[str, dict[str, Any]] = {}
    for path, method, operation in _operations:
        by_path.setdefault(path, {})[method] = operation
    for path, operations in by_path.items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()


@bp.get("/openapi.json")
def openapi_json():
    return jsonify(openapi_document())


document(
    "/companies/{companyId}",
    "get",
    summary="A company's state, connections, initial sync and history",
    tags=("companies",),
    path_params={"companyId": "Codat's company id"},
    responses={"200": ("The company as the state machine knows it", schemas.Company)},
    errors=("400", "401", "404"),
)
document(
    "/openapi.json",
    "get",
    summary="This document",
    tags=("meta",),
    responses={"200": ("OpenAPI 3.0 document", None)},
    errors=("401",),
)
