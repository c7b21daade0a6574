"""The authorization journey under `/api` (bearer token, like all of `/api`):

| endpoint | Codat operation(s) |
| --- | --- |
| `POST /api/companies` | list-companies (by `customerId` tag, or by name), create-company |
| `DELETE /api/companies/<id>` | delete-company, then erasure here (tombstone) |
| `GET /api/companies/<id>/connection-management-token` | get-connection-management-access-token |
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

from flask import current_app, jsonify, url_for

from app.api import schemas
from app.api.companies import company_view
from app.api.framework import Blueprint
from codat_authflow.journey import companies, connections, erasure, integrations, reconcile
from codat_authflow.journey.codat import integrations_query
from codat_authflow.journey.service import Journey

bp = Blueprint("journey", __name__)


def journey() -> Journey:
    return current_app.extensions["journey"]


# -- companies ------------------------------------------------------------------


@bp.post("/companies", tags=["companies"])
@bp.arguments(schemas.CreateCompanyRequest)
@bp.response(201, schemas.Company, description="Created in Codat")
@bp.alt_response(
    200,
    schema=schemas.Company,
    description="Already existed (here, or in Codat with this customerId tag or name)",
    success=True,
)
@bp.errors(400, 401, 402, 409, 413, 415, 502, 503, 504)
def create_company(body: dict[str, Any]):
    """Create the Codat company for one of your customers (idempotent by customerId)

    Call it when the customer signs up. `customerId` is your own id for the
    customer, any characters: the same customerId again returns the same company (200),
    never a second Codat company, even after a timeout; it is kept at Codat as the
    company tag `customerId`, and `name` is only displayed. Without `customerId`, `name`
    is your id for the customer, limited to Codat's name characters. The company starts
    in state `created`.
    """
    if "customerId" in body:
        creation = companies.create_customer_company(
            journey(),
            body["customerId"],
            body.get("name"),
            body.get("description"),
            body.get("tags"),
        )
    else:
        creation = companies.create_company(
            journey(), body["name"], body.get("description"), body.get("tags")
        )
    response = jsonify(company_view(creation.record, journey().store.gate))
    response.status_code = 201 if creation.created else 200
    response.headers["Location"] = url_for(
        "api.companies.get_company", company_id=creation.record.facts.company_id
    )
    return response


@bp.delete("/companies/<company_id>", tags=["companies"])
@bp.path(schemas.CompanyPath)
@bp.response(200, schemas.Erasure, description="Erased (or erased before)")
@bp.errors(400, 401, 402, 404, 502, 503, 504)
def erase_company(company_id: str):
    """Erase a company: at Codat (delete-company), then here

    Codat deletes the company, its connections and its data. Subscribers then get
    `company.revoked` with `companyDeleted: true`, and our document, indexes and event
    log are removed; a tombstone remains, so late webhooks for the company are
    acknowledged and ignored. If Codat fails, nothing is erased: retry. Erasing again
    answers 200 with `alreadyErased: true`.
    """
    return jsonify(erasure.erase_company(journey(), company_id).to_json())


@bp.get("/companies/<company_id>/connection-management-token", tags=["connections"])
@bp.path(schemas.CompanyPath)
@bp.response(200, schemas.ConnectionManagementToken, description="Codat's access token")
@bp.errors(400, 401, 402, 404, 409, 502, 503, 504)
def connection_management_token(company_id: str):
    """An access token for Codat's embeddable connection manager

    Codat's get-connection-management-access-token, for hosts that embed Codat's
    connection management UI: pass `accessToken` to it in the customer's browser. Codat
    marks the operation deprecated in favour of its company access token. Not cached.
    """
    response = jsonify(connections.connection_management_token(journey(), company_id))
    response.headers["Cache-Control"] = "no-store"
    return response


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


@bp.get("/integrations", tags=["integrations"])
@bp.arguments(schemas.IntegrationsQuery, location="query")
@bp.response(200, schemas.Integrations, description="Integrations")
@bp.errors(400, 401, 402, 502, 503, 504)
def list_integrations(args: dict[str, Any]):
    """The platforms your customers can connect

    Codat's list-integrations, filtered with Codat's query language
    (`sourceType=Accounting&&enabled=true`).
    """
    results = integrations.list_integrations(journey(), args.get("sourceType"), args.get("enabled"))
    return jsonify(
        {
            "results": [_integration_view(i) for i in results],
            "query": integrations_query(args.get("sourceType"), args.get("enabled")),
        }
    )


@bp.get("/integrations/<platform_key>/branding", tags=["integrations"])
@bp.path(schemas.PlatformPath)
@bp.response(200, schemas.Branding, description="Branding")
@bp.errors(400, 401, 402, 404, 502, 503, 504)
def branding(platform_key: str):
    """Codat's logos and buttons for a platform (cached for a day)"""
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


# -- connections ----------------------------------------------------------------


@bp.post("/companies/<company_id>/connections", tags=["connections"])
@bp.path(schemas.CompanyPath)
@bp.arguments(schemas.CreateConnectionRequest)
@bp.response(201, schemas.ConnectionCreated, description="Created; send the user to linkUrl")
@bp.errors(400, 401, 402, 404, 409, 413, 415, 502, 503, 504)
def create_connection(body: dict[str, Any], company_id: str):
    """Create a connection and get the linkUrl to send the user to

    A company can link one accounting platform: while it has a linked
    accounting connection (confirmed with Codat), connecting another accounting platform
    is a 409 naming it. Banking and commerce connections are unlimited. The company moves
    to `linking` (or whatever Codat's answer implies).
    """
    created = connections.create_connection(
        journey(), company_id, body["platformKey"], body.get("linkParams")
    )
    return jsonify(created), 201


@bp.get("/companies/<company_id>/connections", tags=["connections"])
@bp.path(schemas.CompanyPath)
@bp.response(200, schemas.Connections, description="Connections")
@bp.errors(400, 401, 402, 404, 502, 503, 504)
def list_connections(company_id: str):
    """The company's connections, live from Codat, with what we know of each"""
    return jsonify(connections.list_connections(journey(), company_id))


@bp.post("/companies/<company_id>/connections/<connection_id>/unlink", tags=["connections"])
@bp.path(schemas.ConnectionPath)
@bp.arguments(schemas.EmptyRequest, required=False)
@bp.response(200, schemas.ConnectionChange, description="Unlinked")
@bp.errors(400, 401, 402, 404, 409, 413, 415, 502, 503, 504)
def unlink_connection(_body: dict[str, Any], company_id: str, connection_id: str):
    """Revoke access to the platform; data already synced is kept"""
    return jsonify(connections.unlink_connection(journey(), company_id, connection_id))


@bp.delete("/companies/<company_id>/connections/<connection_id>", tags=["connections"])
@bp.path(schemas.ConnectionPath)
@bp.response(200, schemas.ConnectionChange, description="Deleted")
@bp.errors(400, 401, 402, 404, 409, 502, 503, 504)
def delete_connection(company_id: str, connection_id: str):
    """Delete the connection and the data Codat holds through it"""
    return jsonify(connections.delete_connection(journey(), company_id, connection_id))


@bp.post("/companies/<company_id>/refresh", tags=["connections"])
@bp.path(schemas.CompanyPath)
@bp.arguments(schemas.EmptyRequest, required=False)
@bp.response(202, schemas.RefreshQueued, description="Queued at Codat")
@bp.errors(400, 401, 402, 404, 409, 413, 415, 502, 503, 504)
def refresh(_body: dict[str, Any], company_id: str):
    """Queue a fetch of all the company's data"""
    return jsonify(connections.refresh(journey(), company_id)), 202


# -- reconciliation ---------------------------------------------------------------


@bp.get("/reconciliation/stuck", tags=["reconciliation"])
@bp.response(200, schemas.StuckReports, description="Reports")
@bp.errors(401)
def stuck():
    """Companies reconciliation cannot move on its own (e.g. every Link URL expired)"""
    return jsonify({"results": reconcile.stuck_reports(journey())})
