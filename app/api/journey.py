"""The authorization journey under `/api` (bearer token, like all of `/api`):

| endpoint | Codat operation(s) |
| --- | --- |
| `POST /api/companies` | list-companies (by name), create-company |
| `GET /api/integrations` | list-integrations |
| `GET /api/integrations/<platformKey>/branding` | get-integrations-branding (cached 24 h) |
| `POST /api/companies/<id>/connections` | get-integration (cached), create-connection (*) |
| `GET /api/companies/<id>/connections` | list-connections |
| `POST /api/companies/<id>/connections/<connectionId>/unlink` | unlink-connection |
| `DELETE /api/companies/<id>/connections/<connectionId>` | delete-connection |
| `POST /api/companies/<id>/refresh` | refresh-company-data |
| `GET /api/reconciliation/stuck` | none: companies reconciliation set aside |

(*) plus list-connections / get-connection to confirm a linked accounting
connection before refusing a second one. The views only validate input and
shape output; the work is in `journey`.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify, url_for

from app.api import schemas
from app.api.companies import company_view
from app.api.inputs import json_body, path_value, query_args
from app.api.openapi import document
from codat_authflow.journey import companies, connections, integrations, reconcile
from codat_authflow.journey.codat import integrations_query
from codat_authflow.journey.service import Journey

bp = Blueprint("journey", __name__)

_create_company = schemas.CreateCompanyRequest()
_integrations_query = schemas.IntegrationsQuery()
_create_connection = schemas.CreateConnectionRequest()
_empty = schemas.EmptyRequest()

COMPANY_PARAM = {"companyId": "Codat's company id (a UUID)"}
CONNECTION_PARAMS = {**COMPANY_PARAM, "connectionId": "Codat's connection id (a UUID)"}


def journey() -> Journey:
    return current_app.extensions["journey"]


def _company_id(value: str) -> str:
    return path_value("companyId", value, schemas.UUID, "companyId must be a UUID")


def _connection_id(value: str) -> str:
    return path_value("connectionId", value, schemas.UUID, "connectionId must be a UUID")


# -- companies ------------------------------------------------------------------


@bp.post("/companies")
def create_company():
    body = json_body(_create_company)
    creation = companies.create_company(
        journey(), body["name"], body.get("description"), body.get("tags")
    )
    response = jsonify(company_view(creation.record, journey().store.gate))
    response.status_code = 201 if creation.created else 200
    response.headers["Location"] = url_for(
        "api.companies.get_company", company_id=creation.record.facts.company_id
    )
    return response


document(
    "/companies",
    "post",
    summary="Create the Codat company for one of your customers (idempotent by name)",
    description="Call it when the customer signs up. `name` is your own id for the "
    "customer: the same name again returns the same company (200), never a second Codat "
    "company, even after a timeout. The company starts in state `created`.",
    tags=("companies",),
    body=schemas.CreateCompanyRequest,
    responses={
        "201": ("Created in Codat", schemas.Company),
        "200": ("Already existed (here, or in Codat under this name)", schemas.Company),
    },
    errors=("400", "401", "409", "413", "415", "502", "503", "504"),
)


# -- integrations ---------------------------------------------------------------


def _integration_view(integration: dict[str, Any]) -> dict[str, Any]:
    key = integration.get("key")
    return {
        "platformKey": key,
        "name": integration.get("name"),
        "sourceType": integration.get("sourceType"),
        "enabled": integration.get("enabled"),
        "logoUrl": integration.get("logoUrl"),
        "integrationId": integration.get("integrationId"),
        "isBeta": integration.get("isBeta"),
        "isOfflineConnector": integration.get("isOfflineConnector"),
        "brandingUrl": url_for("api.journey.branding", platform_key=key) if key else None,
    }


@bp.get("/integrations")
def list_integrations():
    args = query_args(_integrations_query)
    results = integrations.list_integrations(journey(), args.get("sourceType"), args.get("enabled"))
    return jsonify(
        {
            "results": [_integration_view(i) for i in results],
            "query": integrations_query(args.get("sourceType"), args.get("enabled")),
        }
    )


document(
    "/integrations",
    "get",
    summary="The platforms your customers can connect",
    description="Codat's list-integrations, filtered with Codat's query language "
    "(`sourceType=Accounting&&enabled=true`).",
    tags=("integrations",),
    query=schemas.IntegrationsQuery,
    responses={"200": ("Integrations", schemas.Integrations)},
)


@bp.get("/integrations/<platform_key>/branding")
def branding(platform_key: str):
    path_value("platformKey", platform_key, schemas.PLATFORM_KEY, "platformKey is malformed")
    value, cached = integrations.branding(journey(), platform_key)
    response = jsonify(
        {
            "platformKey": platform_key,
            "logo": value.get("logo"),
            "button": value.get("button"),
            "sourceId": value.get("sourceId"),
        }
    )
    response.headers["X-Cache"] = "hit" if cached else "miss"
    response.headers["Cache-Control"] = "private, max-age=3600"
    return response


document(
    "/integrations/{platformKey}/branding",
    "get",
    summary="Codat's logos and buttons for a platform (cached for a day)",
    tags=("integrations",),
    path_params={"platformKey": "Codat's 4-letter platform key"},
    responses={"200": ("Branding", schemas.Branding)},
    errors=("400", "401", "404", "502", "503", "504"),
)


# -- connections ----------------------------------------------------------------


@bp.post("/companies/<company_id>/connections")
def create_connection(company_id: str):
    _company_id(company_id)
    body = json_body(_create_connection)
    created = connections.create_connection(
        journey(), company_id, body["platformKey"], body.get("linkParams")
    )
    return jsonify(created), 201


document(
    "/companies/{companyId}/connections",
    "post",
    summary="Create a connection and get the linkUrl to send the user to",
    description="A company can link one accounting platform: while it has a linked "
    "accounting connection (confirmed with Codat), connecting another accounting platform "
    "is a 409 naming it. Banking and commerce connections are unlimited. The company moves "
    "to `linking` (or whatever Codat's answer implies).",
    tags=("connections",),
    path_params=COMPANY_PARAM,
    body=schemas.CreateConnectionRequest,
    responses={"201": ("Created; send the user to linkUrl", schemas.ConnectionCreated)},
    errors=("400", "401", "404", "409", "413", "415", "502", "503", "504"),
)


@bp.get("/companies/<company_id>/connections")
def list_connections(company_id: str):
    _company_id(company_id)
    return jsonify(connections.list_connections(journey(), company_id))


document(
    "/companies/{companyId}/connections",
    "get",
    summary="The company's connections, live from Codat, with what we know of each",
    tags=("connections",),
    path_params=COMPANY_PARAM,
    responses={"200": ("Connections", schemas.Connections)},
    errors=("400", "401", "404", "502", "503", "504"),
)


@bp.post("/companies/<company_id>/connections/<connection_id>/unlink")
def unlink_connection(company_id: str, connection_id: str):
    _company_id(company_id)
    _connection_id(connection_id)
    json_body(_empty, optional=True)
    return jsonify(connections.unlink_connection(journey(), company_id, connection_id))


document(
    "/companies/{companyId}/connections/{connectionId}/unlink",
    "post",
    summary="Revoke access to the platform; data already synced is kept",
    tags=("connections",),
    path_params=CONNECTION_PARAMS,
    responses={"200": ("Unlinked", schemas.ConnectionChange)},
    errors=("400", "401", "404", "409", "413", "415", "502", "503", "504"),
)


@bp.delete("/companies/<company_id>/connections/<connection_id>")
def delete_connection(company_id: str, connection_id: str):
    _company_id(company_id)
    _connection_id(connection_id)
    return jsonify(connections.delete_connection(journey(), company_id, connection_id))


document(
    "/companies/{companyId}/connections/{connectionId}",
    "delete",
    summary="Delete the connection and the data Codat holds through it",
    tags=("connections",),
    path_params=CONNECTION_PARAMS,
    responses={"200": ("Deleted", schemas.ConnectionChange)},
    errors=("400", "401", "404", "409", "502", "503", "504"),
)


@bp.post("/companies/<company_id>/refresh")
def refresh(company_id: str):
    _company_id(company_id)
    json_body(_empty, optional=True)
    return jsonify(connections.refresh(journey(), company_id)), 202


document(
    "/companies/{companyId}/refresh",
    "post",
    summary="Queue a fetch of all the company's data",
    tags=("connections",),
    path_params=COMPANY_PARAM,
    responses={"202": ("Queued at Codat", schemas.RefreshQueued)},
    errors=("400", "401", "404", "409", "413", "415", "502", "503", "504"),
)


# -- reconciliation ---------------------------------------------------------------


@bp.get("/reconciliation/stuck")
def stuck():
    return jsonify({"results": reconcile.stuck_reports(journey())})


document(
    "/reconciliation/stuck",
    "get",
    summary="Companies reconciliation cannot move on its own (e.g. every Link URL expired)",
    tags=("reconciliation",),
    responses={"200": ("Reports", schemas.StuckReports)},
    errors=("401",),
)
