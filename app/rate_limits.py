"""Per-client-address rate limits (flask-limiter, counted in Redis so every
gunicorn worker shares them), for the public endpoints only: today
`GET /link/callback`, which anyone can call without a token.

The client address is the socket's peer, or, when `TRUSTED_PROXIES` is set,
the address that many proxy hops vouch for in X-Forwarded-For (werkzeug's
ProxyFix, installed by `create_app`); never a header a client sets itself.

When Redis cannot be reached the limiter fails open to a per-process
in-memory limit (`in_memory_fallback_enabled`) and never answers 500 of its
own: the page the user returns to from Link must not fail because the
counters cannot be kept, and each worker still limits what it serves. (The
page itself then answers 503: it cannot read the company without Redis.)
"""

from __future__ import annotations

from flask import Flask
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from codat_authflow.bootstrap import Services

#: A user comes back from Link once or twice; a browser retry or two on top.
LINK_CALLBACK_LIMIT = "20 per minute"


def init_rate_limits(app: Flask, services: Services) -> Limiter:
    limiter = Limiter(
        key_func=get_remote_address,
        app=app,
        # The app's own connection pool (the URI only picks limits' Redis backend):
        # one set of connections, Sentinel's lookup included, and the tests'
        # in-memory Redis works too.
        storage_uri="redis://",
        storage_options={"connection_pool": services.redis.connection_pool},
        strategy="fixed-window",
        key_prefix=services.store.keys.rate_limit_prefix,
        swallow_errors=True,
        in_memory_fallback_enabled=True,
        headers_enabled=True,
    )
    from app import link_page

    limiter.limit(LINK_CALLBACK_LIMIT)(link_page.bp)

    app.extensions["rate_limiter"] = limiter
    return limiter
