"""The connect pages' routes. Every page and form is opened by a connect
token (`codat_authflow.connect.links`); every form is a CSRF-protected POST;
every refusal is a plain page with the right status, decided before anything
changes (token, then CSRF, then the connection's owner, then Codat)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import structlog
from flask import (
    Blueprint,
    Response,
    current_app,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import format_datetime, get_locale
from flask_babel import gettext as _
from flask_limiter import RateLimitExceeded

from codat_authflow.connect import pages
from codat_authflow.connect.links import ConnectLink, ConnectLinks, CsrfError, InvalidLink
from codat_authflow.journey.codat import CodatError
from codat_authflow.journey.errors import AccountingConnectionExists, JourneyError
from codat_authflow.journey.service import Journey

log = structlog.get_logger(__name__)

bp = Blueprint(
    "connect",
    __name__,
    url_prefix="/connect",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

CSRF_COOKIE = "connect_csrf"
RETURN_COOKIE = "connect_return"
UUID_RE = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
PLATFORM_KEY_MAX = 64
#: Per client address, every page and form (not the static files).
PAGES_LIMIT = "120 per minute"


class Refused(Exception):
    def __init__(self, status: int, title: str, text: str):
        super().__init__(title)
        self.status, self.title, self.text = status, title, text


def _links() -> ConnectLinks:
    return current_app.extensions["connect_links"]


def _journey() -> Journey:
    return current_app.extensions["journey"]


def _open(token: str) -> ConnectLink:
    link = _links().open(token)  # InvalidLink: handled below
    record = _journey().store.get(link.company_id)
    if record is None:
        raise InvalidLink("unknown_company")
    return link


def _security_headers(response: Response) -> Response:
    # img-src https: for Codat's branding (static.codat.io) and CONNECT_LOGO_URL.
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; img-src 'self' https:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; form-action 'self' https:; base-uri 'none'; frame-ancestors 'none'"
    )
    return response


bp.after_request(_security_headers)


def _browser_secret() -> str:
    return request.cookies.get(CSRF_COOKIE) or ConnectLinks.new_browser_secret()


def _render(template: str, http_status: int = 200, **context: Any) -> Response:
    settings = _journey().settings
    secret = _browser_secret()
    link: ConnectLink | None = context.get("link")
    # Forms only on /connect/ pages, where the CSRF cookie is sent (the result
    # page under /link/callback has none, and must not replace the cookie).
    with_forms = link is not None and request.path.startswith("/connect/")
    csrf = _links().csrf_token(link, secret) if with_forms and link else None
    context.setdefault("csrf_token", csrf)
    body = render_template(
        f"connect/{template}",
        brand_name=settings.connect_brand_name,
        logo_url=settings.connect_logo_url or url_for("connect.static", filename="logo.svg"),
        locale=str(get_locale() or "en"),
        **context,
    )
    response = make_response(body, http_status)
    if with_forms and request.cookies.get(CSRF_COOKIE) != secret:
        response.set_cookie(
            CSRF_COOKIE,
            secret,
            httponly=True,
            samesite="Lax",
            secure=request.is_secure,
            path="/connect/",
        )
    return response


def _check_csrf(link: ConnectLink) -> None:
    _links().check_csrf(link, request.cookies.get(CSRF_COOKIE), request.form.get("csrf_token"))


def _form_connection_id() -> str:
    value = request.form.get("connectionId") or ""
    if not re.fullmatch(UUID_RE, value):
        raise pages.NotYourConnection(value)
    return value.lower()


# -- refusals: plain pages, the right status, nothing changed ----------------------


@bp.errorhandler(InvalidLink)
def invalid_link(exc: InvalidLink):
    if exc.reason == "expired":
        return _plain(410, _("This link has expired"), _("Ask for a new link."))
    if exc.reason == "revoked":
        return _plain(410, _("This link is no longer valid"), _("Ask for a new link."))
    return _plain(
        404,
        _("This link is not valid"),
        _("Check that you copied the whole link, or ask for a new one."),
    )


@bp.errorhandler(CsrfError)
def csrf_refused(_exc: CsrfError):
    return _plain(
        400,
        _("This form has expired"),
        _("Nothing was changed. Go back, reload the page and try again."),
    )


@bp.errorhandler(pages.NotYourConnection)
def not_yours(_exc):
    return _plain(404, _("Connection not found"), _("Nothing was changed."))


@bp.errorhandler(pages.CannotReconnect)
def cannot_reconnect(_exc):
    return _plain(
        409,
        _("This connection cannot be reconnected"),
        _("Only a connection whose access was withdrawn can be reconnected. Nothing was changed."),
    )


@bp.errorhandler(pages.NoLinkUrl)
def no_link_url(_exc):
    return _plain(
        502,
        _("The service is not available right now"),
        _("Please wait a while before you try again."),
    )


@bp.errorhandler(RateLimitExceeded)
def too_many(exc: RateLimitExceeded):
    response = _plain(429, _("Too many attempts"), _("Please wait a while before you try again."))
    retry_after = getattr(exc, "retry_after", None)
    if retry_after:
        response.headers["Retry-After"] = str(retry_after)
    return response


@bp.errorhandler(AccountingConnectionExists)
def accounting_exists(_exc):
    return _plain(
        409,
        _("Your accounting software is already connected"),
        _(
            "A company can connect one accounting platform. Revoke access to it first, "
            "on the page that manages your connections."
        ),
    )


@bp.errorhandler(JourneyError)
def journey_refused(exc: JourneyError):
    return _plain(
        exc.status, _("We could not do that"), _("Nothing was changed. Please try again later.")
    )


@bp.errorhandler(CodatError)
def codat_failed(exc: CodatError):
    log.warning("connect.codat_failed", code=exc.code, status=exc.status)
    status = 503 if exc.status == 503 else 502
    return _plain(
        status,
        _("The service is not available right now"),
        _("Nothing was changed. Please try again in a few minutes."),
    )


@bp.errorhandler(Refused)
def refused(exc: Refused):
    return _plain(exc.status, exc.title, exc.text)


def _plain(status: int, title: str, text: str) -> Response:
    return _render("message.html", status, title=title, text=text, link=None)


# -- pages ---------------------------------------------------------------------------


@bp.app_template_filter("connect_when")
def connect_when(value: Any) -> str:
    """Codat's ISO 8601 timestamps, in the customer's language."""
    if not isinstance(value, str) or not value:
        return ""
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return format_datetime(moment, "medium")


@bp.get("/theme.css")
def theme():
    """The lender's accent colour (CONNECT_ACCENT_COLOUR), as a stylesheet."""
    colour = _journey().settings.connect_accent_colour
    response = make_response(f":root {{ --accent: {colour}; }}\n")
    response.headers["Content-Type"] = "text/css; charset=utf-8"
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


def _share_mail(share_url: str, brand: str) -> str:
    subject = _("Please connect our accounting software for %(brand)s", brand=brand)
    body = _(
        "Hello,\n\n%(brand)s asks us to share our accounting data through Codat. "
        "Could you connect our accounting software here:\n\n%(url)s\n\nThank you.",
        brand=brand,
        url=share_url,
    )
    return f"mailto:?subject={quote(subject)}&body={quote(body)}"


@bp.get("/<token>")
def choose(token: str):
    link = _open(token)
    journey = _journey()
    sections = pages.platform_sections(journey)
    status = pages.status(journey, link.company_id)
    share_url = url_for("connect.choose", token=token, _external=True)
    if journey.settings.connect_base_url:
        share_url = f"{journey.settings.connect_base_url}/connect/{token}"
    return _render(
        "choose.html",
        link=link,
        sections=sections,
        status=status,
        share_url=share_url,
        mailto=_share_mail(share_url, journey.settings.connect_brand_name),
    )


@bp.post("/<token>/choose")
def choose_platform(token: str):
    link = _open(token)
    _check_csrf(link)
    platform_key = (request.form.get("platformKey") or "").strip()
    if not platform_key or len(platform_key) > PLATFORM_KEY_MAX or not platform_key.isalnum():
        raise Refused(
            400, _("Choose a platform"), _("Nothing was changed. Go back and choose a platform.")
        )
    link_url = pages.choose_platform(_journey(), link.company_id, link.link_id, platform_key)
    return _to_link(link, link_url)


def _to_link(link: ConnectLink, link_url: str) -> Response:
    response = redirect(link_url, code=303)
    response.set_cookie(
        RETURN_COOKIE,
        _links().return_cookie(link),
        max_age=24 * 3600,
        httponly=True,
        samesite="Lax",
        secure=request.is_secure,
        path="/link/callback",
    )
    return response


@bp.get("/<token>/status")
def status(token: str):
    link = _open(token)
    state = pages.status(_journey(), link.company_id)
    labels = {
        "ready": _("Your data is ready. You can close this page."),
        "syncing": _("We are fetching your data. This can take a few minutes."),
        "linked": _("We are fetching your data. This can take a few minutes."),
        "linking": _("We are waiting for the connection to be confirmed."),
        "created": _("No platform is connected yet."),
        "revoked": _("Access to your data was withdrawn."),
    }
    response = jsonify({**state, "label": labels.get(state["state"], state["state"])})
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/<token>/connections")
def connections(token: str):
    link = _open(token)
    journey = _journey()
    view = pages.connections(journey, link.company_id)
    return _render(
        "connections.html",
        link=link,
        view=view,
        notice=request.args.get("done")
        if request.args.get("done") in ("unlink", "delete")
        else None,
    )


@bp.get("/<token>/connections/<connection_id>/<action>")
def confirm(token: str, connection_id: str, action: str):
    link = _open(token)
    if action not in ("unlink", "delete") or not re.fullmatch(UUID_RE, connection_id):
        raise Refused(404, _("Page not found"), _("Nothing was changed."))
    name = pages.connection_name(_journey(), link.company_id, connection_id.lower())
    return _render(
        "confirm.html", link=link, action=action, connection_id=connection_id.lower(), name=name
    )


@bp.post("/<token>/actions/<action>")
def act(token: str, action: str):
    link = _open(token)
    _check_csrf(link)
    journey = _journey()
    connection_id = _form_connection_id()
    if action == "reconnect":
        return _to_link(
            link, pages.reconnect(journey, link.company_id, link.link_id, connection_id)
        )
    if action == "unlink":
        pages.unlink(journey, link.company_id, link.link_id, connection_id)
    elif action == "delete":
        if request.form.get("understood") != "yes":
            raise Refused(
                400,
                _("Please confirm"),
                _(
                    "Tick the box to confirm that you understand what is deleted. Nothing was changed."  # noqa: E501
                ),
            )
        pages.delete(journey, link.company_id, link.link_id, connection_id)
    else:
        raise Refused(404, _("Page not found"), _("Nothing was changed."))
    return redirect(url_for("connect.connections", token=token, done=action), code=303)


# -- the result page after Link (rendered for /link/callback) -----------------------


def result_page(result) -> Response | None:
    """The page for `/link/callback` when the customer came from a connect link
    (the signed `connect_return` cookie set when they chose a platform); None
    otherwise (app/link_page.py then shows its own page)."""
    link = _links().from_return_cookie(request.cookies.get(RETURN_COOKIE))
    if link is None:
        return None
    if result.company_id is not None and result.company_id != link.company_id:
        return None
    journey = _journey()
    linked = {c["sourceType"] for c in pages.status(journey, link.company_id)["connections"]}
    optional = [t for t in journey.settings.connect_source_types[1:] if t not in linked]
    response = _render(
        "result.html",
        400 if result.outcome == "invalid" else 200,
        next_step=optional[0] if optional else None,
        link=link,
        outcome=result.outcome,
        platform=result.platform_name,
    )
    return _security_headers(response)


def apply_rate_limits(app) -> None:
    """Per link: CONNECT_CREATIONS_PER_HOUR connection creations; per client
    address: the pages themselves (flask-limiter, counted in Redis)."""
    limiter = app.extensions.get("rate_limiter")
    if limiter is None:
        return
    per_hour = app.extensions["authflow"].settings.connect_creations_per_hour

    def link_key() -> str:
        token = (request.view_args or {}).get("token") or ""
        return "connect-link:" + (_links().unsigned_link_id(token) or "invalid")

    endpoint = "connect.choose_platform"  # the decorator wraps the view: use the wrapper
    app.view_functions[endpoint] = limiter.limit(f"{per_hour} per hour", key_func=link_key)(
        app.view_functions[endpoint]
    )
    assets = ("connect.static", "connect.theme")  # cached files: not counted
    limiter.limit(PAGES_LIMIT, exempt_when=lambda: request.endpoint in assets)(bp)
