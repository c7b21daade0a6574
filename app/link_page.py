"""`GET /link/callback`: where Codat's Link flow sends the user back.

Configure it in Codat's portal (Settings > Auth flow > Link > redirect URL)
with the reserved parameters, for example:

    https://<this service>/link/callback?statusCode={statusCode}&errorMessage={errorMessage}
      &statusText={statusText}&companyId={companyId}&connectionId={connectionId}
      &platform={platform}&platformName={platformName}&sourceType={sourceType}

No bearer token: the user's browser lands here. The query string is not
trusted for state (see `codat_authflow.journey.link_callback`): it names the connection to
check with Codat, and the outcome shown is what Codat confirms. The user is
then redirected to LINK_SUCCESS_URL or LINK_FAILURE_URL (with `outcome`,
`companyId` and `connectionId` added to the URL's query string, and every
parameter that is not reserved passed through), or, when those are unset,
shown a short page saying what happened and what to do next. Status 201
(success, no connection information) is a success.
"""

from __future__ import annotations

from flask import Blueprint, current_app, redirect, request
from marshmallow import ValidationError

from app.api.schemas import LinkCallbackQuery
from codat_authflow.journey.codat import add_query_params
from codat_authflow.journey.link_callback import (
    SUCCESS_OUTCOMES,
    CallbackResult,
    handle_callback,
    passthrough_params,
)
from codat_authflow.journey.service import Journey

bp = Blueprint("link_callback", __name__)

_query = LinkCallbackQuery()

MESSAGES = {
    "connected": (
        "Your {platform_}account is connected",
        "Thank you. We can now see the data you agreed to share, and we are fetching it. "
        "You can close this page and go back to the application; the first fetch can take "
        "a few minutes.",
    ),
    "completed": (
        "You are all set",
        "Nothing more is needed here. You can close this page and go back to the "
        "application: it shows which of your platforms are connected.",
    ),
    "pending": (
        "We are finishing your connection",
        "The authorization went through and we are waiting for Codat to confirm it. Go back "
        "to the application: it will show the connection as soon as it is confirmed. If it "
        "still does not after a few minutes, start the connection again.",
    ),
    "cancelled": (
        "The connection was cancelled",
        "You stopped before granting access, so nothing was shared. Go back to the "
        "application and choose Connect again whenever you are ready.",
    ),
    "error": (
        "The connection did not go through",
        "Something went wrong while connecting to {platform}. Nothing was shared. Go back to "
        "the application and try again; if it keeps failing, contact support.",
    ),
    "not_supported": (
        "This platform cannot be connected",
        "Connecting this platform is not supported for your account. Go back to the "
        "application and choose another platform, or contact support.",
    ),
    "unknown": (
        "We could not confirm the connection",
        "We did not receive a clear answer about your connection. Go back to the application "
        "to check whether it is connected, and if not, start the connection again.",
    ),
    "invalid": (
        "We could not tell which connection this was",
        "This page was opened without the details we need. Go back to the application and "
        "start the connection again from there.",
    ),
}

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 36rem; margin: 4rem auto;
       padding: 0 1rem; color: #1f2933; line-height: 1.5; }
h1 { font-size: 1.5rem; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
<p>{{ text }}</p>
</body>
</html>
"""

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "frame-ancestors 'none'",
}


def _page(result: CallbackResult):
    title, text = MESSAGES[result.outcome]
    name = result.platform_name  # from Codat's answer or our records, never the query string
    title = title.format(platform_=f"{name} " if name else "")
    text = text.format(platform=name or "the platform")
    template = current_app.extensions.get("link_page_template")
    if template is None:  # compiled once per app, not on every request (5 ms each)
        template = current_app.jinja_env.from_string(PAGE)
        current_app.extensions["link_page_template"] = template
    body = template.render(title=title, text=text)
    return body, 400 if result.outcome == "invalid" else 200, SECURITY_HEADERS


@bp.get("/link/callback")
def link_callback():
    journey: Journey = current_app.extensions["journey"]
    try:
        params = _query.load(request.args.to_dict())
    except ValidationError:
        result = CallbackResult("invalid", None, None)
    else:
        result = handle_callback(journey, params)

    settings = journey.settings
    target = (
        settings.link_success_url
        if result.outcome in SUCCESS_OUTCOMES
        else settings.link_failure_url
    )
    if target:
        extra = passthrough_params(request.args, target)
        extra["outcome"] = result.outcome
        if result.company_id:
            extra["companyId"] = result.company_id
        if result.connection_id:
            extra["connectionId"] = result.connection_id
        response = redirect(add_query_params(target, extra), code=303)
        response.headers.update(SECURITY_HEADERS)
        return response
    connect_page = current_app.extensions.get("connect_result_page")  # app/connect
    if connect_page is not None:
        page = connect_page(result)  # None unless the customer came from a connect link
        if page is not None:
            return page
    return _page(result)
