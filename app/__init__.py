"""The web tier: Codat webhook receiver, API and ops pages.

`create_app()` is the factory gunicorn serves (`app:create_app()`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from flask import Flask
from redis import Redis

from app.errors import register_error_handlers
from app.signature import SignatureVerifier
from runtime.logs import configure_logging
from runtime.redis_client import connect
from runtime.settings import Settings
from storage.companies import CompanyStore
from storage.inbox import Inbox
from storage.keys import Keys


@dataclass(frozen=True)
class Services:
    """What request handlers need, built once per process."""

    settings: Settings
    redis: Redis
    verifier: SignatureVerifier
    inbox: Inbox
    store: CompanyStore


def create_app(env: Mapping[str, str] | None = None, *, redis: Redis | None = None) -> Flask:
    """Build the app from the environment (or `env`). Tests may pass `redis`."""
    settings = Settings.from_env(env)
    configure_logging(settings.log_level, development=settings.development)
    redis = redis if redis is not None else connect(settings.redis_url)
    keys = Keys(settings.key_prefix)

    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes)
    app.json.sort_keys = False
    app.extensions["authflow"] = Services(
        settings=settings,
        redis=redis,
        verifier=SignatureVerifier(settings.webhook_secrets),
        inbox=Inbox(redis, keys, dedupe_ttl_seconds=settings.dedupe_ttl_seconds),
        store=CompanyStore(redis, keys, history_limit=settings.history_limit),
    )
    register_error_handlers(app)

    from app import health, receiver
    from app.api import api

    app.register_blueprint(receiver.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(api)
    return app
