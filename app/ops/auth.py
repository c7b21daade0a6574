"""Authentication for `/ops` (and `/metrics` unless METRICS_PUBLIC=1).

Browsers get HTTP basic auth, any user name, the password being OPS_TOKEN
(or API_TOKEN when OPS_TOKEN is unset); scripts may send the same token as
`Authorization: Bearer`. Split the roles by setting OPS_TOKEN: the API token
then no longer opens the ops pages, and the ops token opens no API.

Browsers resend basic credentials on their own, so a state-changing request
(the dashboard's requeue buttons) must also prove it comes from our own
pages: `X-Requested-With: XMLHttpRequest` (which jQuery adds and a
cross-site form cannot) or an `Origin` equal to ours; otherwise 403.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from flask import current_app, g, request

from app.errors import error_response

REALM = "codat-authflow ops"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def ops_token() -> str:
    settings = current_app.extensions["authflow"].settings
    return settings.ops_token or settings.api_token


def _matches(candidate: str, expected: str) -> bool:
    return hmac.compare_digest(candidate.encode(), expected.encode())


def authenticated_by() -> str | None:
    """ "basic" or "bearer" if the request carries the ops token, else None."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    scheme, value = scheme.lower(), value.strip()
    expected = ops_token()
    if scheme == "bearer":
        return "bearer" if _matches(value, expected) else None
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        _user, sep, password = decoded.partition(":")
        return "basic" if sep and _matches(password, expected) else None
    return None


def unauthorized():
    return error_response(
        401,
        "unauthorized",
        "log in with any user name and the ops token as password, "
        "or send Authorization: Bearer <token>",
        headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
    )


def _same_origin() -> bool:
    if request.headers.get("X-Requested-With") == "XMLHttpRequest":
        return True
    origin = request.headers.get("Origin")
    return origin is not None and origin.rstrip("/") == request.host_url.rstrip("/")


def require_ops_auth():
    """`before_request` for the ops pages: 401 without the token, 403 for a
    state change a browser was tricked into sending."""
    method = authenticated_by()
    if method is None:
        return unauthorized()
    g.ops_auth = method
    if method == "basic" and request.method not in SAFE_METHODS and not _same_origin():
        return error_response(
            403, "cross_site_request", "state-changing requests must come from the ops pages"
        )
    return None
