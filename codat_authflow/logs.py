"""structlog set-up: JSON lines in production, readable console in development.

Both our own structlog calls and the standard-library loggers of rq, gunicorn
and redis go through the same renderer, so every line of a process has one
format. Secrets never reach a line: any key naming a secret, signature, token,
password or authorization is replaced, wherever it comes from.
"""

from __future__ import annotations

import logging
import sys
from functools import lru_cache

import structlog

_SENSITIVE_WORDS = ("secret", "signature", "token", "authorization", "password")


@lru_cache(maxsize=1024)
def _sensitive(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in _SENSITIVE_WORDS)


def redact_secrets(_logger, _method, event_dict):
    for key in event_dict:
        if _sensitive(key):
            event_dict[key] = "[redacted]"
    return event_dict


def configure_logging(level: str = "INFO", *, development: bool = False) -> None:
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]
    renderer = (
        structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
        if development
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    final = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if not development:
        final.append(structlog.processors.format_exc_info)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processors=[*final, renderer])
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
