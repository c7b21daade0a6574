"""Wires the authorization journey into the Flask app: the `Journey` services
(`app.extensions["journey"]`), the JSON answers for its errors and the page
the user comes back to from Link (`app/link_page.py`). (`app/api/__init__.py`
registers the `/api` endpoints themselves.)"""

from __future__ import annotations

import httpx
from flask import Flask

from app.errors import error_response
from codat_authflow.bootstrap import build_journey
from codat_authflow.journey.codat import CodatError, CodatRateLimited
from codat_authflow.journey.errors import JourneyError
from codat_authflow.journey.service import Journey


def init_journey(app: Flask, *, http_client: httpx.Client | None = None) -> Journey:
    """Build the journey from the app's services; `http_client` lets tests
    choose how Codat is reached."""
    services = app.extensions["authflow"]
    journey = build_journey(services, http_client=http_client)
    app.extensions["journey"] = journey

    @app.errorhandler(CodatError)
    def codat_failed(exc: CodatError):
        if isinstance(exc, CodatRateLimited):  # reconciliation waits too
            current: Journey = app.extensions["journey"]
            current.back_off(exc)
        headers = {"Retry-After": exc.retry_after} if exc.retry_after else None
        return error_response(exc.status, exc.code, exc.message, exc.details(), headers)

    @app.errorhandler(JourneyError)
    def refused(exc: JourneyError):
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        return error_response(exc.status, exc.code, exc.message, exc.details, headers)

    from app import link_page

    if "link_callback" not in app.blueprints:
        app.register_blueprint(link_page.bp)
    return journey
