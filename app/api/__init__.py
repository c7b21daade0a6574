"""The JSON API under `/api`, all of it behind the bearer token."""

from __future__ import annotations

from flask import Blueprint

from app.api import companies, journey, openapi, subscriptions
from app.auth import require_api_token

api = Blueprint("api", __name__, url_prefix="/api")
api.before_request(require_api_token)
api.register_blueprint(companies.bp)
api.register_blueprint(subscriptions.bp)
api.register_blueprint(journey.bp)
api.register_blueprint(openapi.bp)
