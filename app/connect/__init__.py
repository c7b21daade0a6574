"""The connect pages: what a lender's customer clicks through (issue 14).

`GET /connect/<token>` (choose a platform), the result page after Link
(rendered for `/link/callback` when the customer came from a connect link),
`GET /connect/<token>/connections` (manage), and their CSRF-protected forms.
Server-rendered (Jinja), one stylesheet and one small script of our own,
nothing from the internet; English and French (Flask-Babel, from
Accept-Language). The use cases are in `codat_authflow.connect`.
"""

from __future__ import annotations

from flask import Flask, request
from flask_babel import Babel

from codat_authflow.connect.links import ConnectLinks

LOCALES = ("en", "fr")


def select_locale() -> str:
    return request.accept_languages.best_match(LOCALES) or "en"


def init_connect(app: Flask) -> None:
    """Register the pages; call after `init_journey` and `init_rate_limits`."""
    from app.connect import views

    services = app.extensions["authflow"]
    app.extensions["connect_links"] = ConnectLinks(
        services.settings, services.redis, services.store.keys
    )
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", "connect/translations")
    Babel(app, locale_selector=select_locale)
    app.register_blueprint(views.bp)
    views.apply_rate_limits(app)
    app.extensions["connect_result_page"] = views.result_page
