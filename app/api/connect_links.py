"""Connect links (issue 14): the URLs you send a customer to, so that they
choose and connect their platforms on our own pages (`app/connect`).

* `POST /api/companies/<id>/connect-links`: a signed link to that company's
  pages, `{url, expiresAt, linkId}`;
* `DELETE /api/companies/<id>/connect-links`: revoke every link issued so far;
* `DELETE /api/companies/<id>/connect-links/<linkId>`: revoke one link;
* `GET /api/companies/<id>/connect-activity`: what the customer did on the
  pages (actor `customer`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import current_app, jsonify, request
from marshmallow import Schema, fields, validate

from app.api import schemas
from app.api.framework import Blueprint
from codat_authflow.connect import pages
from codat_authflow.connect.links import ConnectLinks
from codat_authflow.journey.connections import known_company

bp = Blueprint("connect_links", __name__)


class ConnectLinkPath(schemas.CompanyPath):
    link_id = fields.String(
        data_key="linkId",
        required=True,
        validate=validate.Regexp(r"^[A-Za-z0-9_-]{8,64}$", error="not a link id"),
        metadata={"description": "The `linkId` returned when the link was created"},
    )


class ConnectLink(Schema):
    url = fields.String(metadata={"description": "Send your customer here"})
    expiresAt = fields.String(metadata={"description": "UTC, ISO 8601"})
    linkId = fields.String(metadata={"description": "To revoke this link alone"})
    companyId = fields.String()


class ConnectLinksRevoked(Schema):
    companyId = fields.String()
    version = fields.Integer(metadata={"description": "Links issued before it no longer open"})


class ConnectLinkRevoked(Schema):
    companyId = fields.String()
    linkId = fields.String()
    revoked = fields.Boolean()


class ConnectAction(Schema):
    at = fields.String()
    actor = fields.String(metadata={"description": "Always `customer`"})
    action = fields.String(
        metadata={
            "description": "connection.create, connection.reconnect, connection.unlink, "
            "connection.delete"
        }
    )
    linkId = fields.String()
    platformKey = fields.String()
    connectionId = fields.String()
    result = fields.String()


class ConnectActivity(Schema):
    companyId = fields.String()
    results = fields.List(fields.Nested(ConnectAction))


def _links() -> ConnectLinks:
    return current_app.extensions["connect_links"]


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@bp.post("/companies/<company_id>/connect-links", tags=["connect"])
@bp.path(schemas.CompanyPath)
@bp.arguments(schemas.EmptyRequest, required=False)
@bp.response(201, ConnectLink, description="A link to the company's connect pages")
@bp.errors(400, 401, 404, 409, 413, 415)
def create_connect_link(_body, company_id: str):
    """A signed, expiring link to the company's connect pages

    The link opens that company's pages (choose a platform, the result, manage
    connections) and nothing else, for CONNECT_LINK_LIFETIME_SECONDS (7 days by
    default), unless revoked. It holds no API token.
    """
    journey = current_app.extensions["journey"]
    known_company(journey, company_id)
    link = _links().issue(company_id)
    base = journey.settings.connect_base_url or request.url_root.rstrip("/")
    return jsonify(
        {
            "url": f"{base}/connect/{link.token}",
            "expiresAt": _iso(link.expires_at),
            "linkId": link.link_id,
            "companyId": company_id,
        }
    ), 201


@bp.delete("/companies/<company_id>/connect-links", tags=["connect"])
@bp.path(schemas.CompanyPath)
@bp.response(200, ConnectLinksRevoked, description="Every earlier link is revoked")
@bp.errors(400, 401)
def revoke_connect_links(company_id: str):
    """Revoke every connect link issued for the company so far"""
    version = _links().revoke_all(company_id)
    return jsonify({"companyId": company_id, "version": version})


@bp.delete("/companies/<company_id>/connect-links/<link_id>", tags=["connect"])
@bp.path(ConnectLinkPath)
@bp.response(200, ConnectLinkRevoked, description="The link is revoked")
@bp.errors(400, 401)
def revoke_connect_link(company_id: str, link_id: str):
    """Revoke one connect link"""
    _links().revoke(link_id)
    return jsonify({"companyId": company_id, "linkId": link_id, "revoked": True})


@bp.get("/companies/<company_id>/connect-activity", tags=["connect"])
@bp.path(schemas.CompanyPath)
@bp.response(200, ConnectActivity, description="Newest first, at most 50")
@bp.errors(400, 401)
def connect_activity(company_id: str):
    """What the customer did on the connect pages (actor `customer`)"""
    journey = current_app.extensions["journey"]
    return jsonify({"companyId": company_id, "results": pages.actions(journey, company_id)})
