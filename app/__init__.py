"""The web tier: Codat webhook receiver, API and ops pages.

`create_app()` is the factory gunicorn serves (`app:create_app()`).
"""

from __future__ import annotations

from collections.abc import Mapping

import click
from flask import Flask
from redis import Redis
from werkzeug.middleware.proxy_fix import ProxyFix

from app.commands import register_commands
from app.connect import init_connect
from app.errors import register_error_handlers
from app.journey_setup import init_journey
from app.ops import init_ops
from app.rate_limits import init_rate_limits
from app.receiver import WebhookReceiver
from app.signature import SignatureVerifier
from codat_authflow.bootstrap import Services
from codat_authflow.logs import configure_logging
from codat_authflow.settings import ConfigError, Settings


def create_app(env: Mapping[str, str] | None = None, *, redis: Redis | None = None) -> Flask:
    """Build the app from the environment (or `env`). Tests may pass `redis`."""
    try:
        settings = Settings.from_env(env)
    except ConfigError as exc:
        if env is None and click.get_current_context(silent=True) is not None:
            from app.commands.unconfigured import unconfigured_app

            return unconfigured_app(exc.problems)  # `flask --app app`: --help, plain errors
        raise
    configure_logging(settings.log_level, development=settings.development)

    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes)
    app.json.sort_keys = False
    if settings.trusted_proxies:  # only then is X-Forwarded-For more than the client's word
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n)  # type: ignore[method-assign]
    # The one bootstrap: the same services the workers and the CLI use.
    services = app.extensions["authflow"] = Services.build(settings, redis)
    register_error_handlers(app)
    register_commands(app)
    init_journey(app)  # Codat's Platform API: app/api/journey.py, /link/callback, reconcile
    init_rate_limits(app, services)  # per client address, public endpoints
    init_connect(app)  # /connect/<token>: the pages a lender's customer clicks through

    from app import health
    from app.api import init_api

    app.register_blueprint(health.bp)
    init_api(app)  # /api, its OpenAPI document and /api/docs
    init_ops(app)  # /ops/rq, /ops/funnel, /metrics, request log lines
    # POST /webhooks/codat: Codat's every event, served ahead of Flask (why: app/receiver.py).
    verifier = SignatureVerifier(settings.webhook_secrets)
    app.wsgi_app = WebhookReceiver(  # type: ignore[method-assign]
        app.wsgi_app, services, verifier, settings.max_body_bytes
    )
    return app
