"""The JSON API under `/api`, all of it behind the bearer token.

Every operation is a flask-smorest view (`app.api.framework`), so inputs are
read by one parser and `/api/openapi.json` documents every operation from
the views' own decorators. `/api/docs` is Swagger UI on that document,
served from swagger-ui-bundle's files (no CDN). The page and its assets are
public, so a browser can open them (they hold no data); the document itself,
like every operation, needs the bearer token, which the page's token field
adds to its own requests.
"""

from __future__ import annotations

from flask import Blueprint as FlaskBlueprint
from flask import Flask, request, send_from_directory
from swagger_ui_bundle import swagger_ui_path

from app.api import companies, connect_links, funnel, journey, subscriptions
from app.api.framework import Api, ApiPaths, Blueprint, limit_body
from app.auth import require_api_token

DOCS_ASSETS = "/api/docs/assets/"

api = Blueprint("api", __name__, url_prefix="/api")
api.before_request(require_api_token)
api.before_request(limit_body)
api.register_blueprint(companies.bp)
api.register_blueprint(subscriptions.bp)
api.register_blueprint(journey.bp)
api.register_blueprint(funnel.bp)
api.register_blueprint(connect_links.bp)

docs_assets = FlaskBlueprint("api_docs_assets", __name__, url_prefix=DOCS_ASSETS.rstrip("/"))
# Public: the paths of the API are described by the document, not the page.
PUBLIC_ENDPOINTS = frozenset({"api-docs.openapi_swagger_ui", "api_docs_assets.docs_asset"})


def _protect_document():
    """`before_request` of flask-smorest's blueprint: the document needs the token."""
    if request.endpoint not in PUBLIC_ENDPOINTS:
        return require_api_token()
    return None


@docs_assets.get("/<path:filename>")
def docs_asset(filename: str):
    """Swagger UI's own files, from the swagger-ui-bundle package."""
    return send_from_directory(swagger_ui_path, filename, max_age=24 * 3600)


def init_api(app: Flask) -> Api:
    app.config.update(
        OPENAPI_URL_PREFIX="/api",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        OPENAPI_SWAGGER_UI_URL=DOCS_ASSETS,
    )
    smorest = Api(
        app,
        spec_kwargs={
            "title": "codat-authflow",
            "version": "1",
            "openapi_version": "3.0.3",
            "flask_plugin": ApiPaths(),
            "info": {
                "description": "The authorization journey over Codat's Platform API, the "
                "state of each company as Codat's webhooks, our API calls and reconciliation "
                "establish it, and the subscriptions of downstream services to our "
                "notifications."
            },
            "servers": [{"url": "/api"}],
            "security": [{"bearerAuth": []}],
        },
    )
    smorest.spec.components.security_scheme(
        "bearerAuth",
        {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <API_TOKEN>"},
    )
    smorest.register_blueprint(api)
    # flask-smorest's own blueprint serves the document and the page.
    app.before_request_funcs.setdefault("api-docs", []).append(_protect_document)
    app.register_blueprint(docs_assets)
    return smorest
