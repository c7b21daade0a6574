"""The receiver with one part of its work taken out: what each part costs
under gunicorn, where the parts interact (a thread waiting on Redis hands
the GIL to another request's thread), which one process cannot show.

``python -m perf.receiver --variants without_store,without_log`` runs each
named factory here as one more configuration, paired with bare Flask like
the receiver. Never for production: each factory patches the app it builds,
in its own gunicorn's workers only.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from typing import Any

from flask import Flask

import app.receiver
from app import create_app
from app.signature import SignatureVerifier
from codat_authflow.logs import configure_logging
from codat_authflow.storage.inbox import Acceptance, Inbox


def without_store() -> Flask:
    """No Redis round trip: every webhook 'queued', nothing stored."""
    Inbox.accept = lambda self, *args, **kwargs: Acceptance(queued=True, drain_needed=False)  # type: ignore[method-assign]
    return create_app()


def without_log() -> Flask:
    """No request line: neither built nor written."""
    app.receiver.log_request = lambda **fields: None  # type: ignore[assignment]
    return create_app()


class _Nowhere(io.TextIOBase):
    def write(self, text: str) -> int:
        return len(text)


def without_log_write() -> Flask:
    """Every log line built and rendered as usual, then not written."""
    flask_app = create_app()  # configures logging: point it nowhere afterwards
    configure_logging(os.environ.get("LOG_LEVEL", "INFO"), stream=_Nowhere())
    return flask_app


def without_signature() -> Flask:
    """No svix verification (every signature taken as valid)."""
    SignatureVerifier.verify = lambda self, body, headers: None  # type: ignore[method-assign]
    return create_app()


#: name -> (factory, whether it stores webhooks: then the inbox must hold every 202)
VARIANTS: dict[str, tuple[Callable[[], Any], bool]] = {
    "without_store": (without_store, False),
    "without_log": (without_log, True),
    "without_log_write": (without_log_write, True),
    "without_signature": (without_signature, True),
}
