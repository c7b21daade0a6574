"""Bearer-token authentication for `/api` and `/ops`."""

from __future__ import annotations

import hmac

from flask import current_app, request

from app.errors import error_response


def require_api_token():
    """A `before_request` hook: 401 unless `Authorization: Bearer <API_TOKEN>`."""
    expected = current_app.extensions["authflow"].settings.api_token
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), expected.encode()
    ):
        return error_response(
            401,
            "unauthorized",
            "send Authorization: Bearer <API_TOKEN>",
            headers={"WWW-Authenticate": 'Bearer realm="codat-authflow"'},
        )
    return None
