"""structlog set-up: JSON lines in production, readable console in development.

Both our own structlog calls and the standard-library loggers of rq, gunicorn
and redis go through the same renderer, so every line of a process has one
format. Secrets never reach a line: any key naming a secret, signature, token,
password or authorization is replaced, wherever it comes from.

RQ's own per-job lines (a job started, "Successfully completed", "Job OK",
"result is kept for 60 seconds", the cron scheduler's "Enqueued job") and its
routine "cleaning registries" lines are demoted to DEBUG: our worker writes
one line per job (`event: job`) with the same facts, and at INFO an idle
stack wrote 84 lines a minute, most of them RQ's four or five per sweep.
With LOG_LEVEL=DEBUG they are back, as debug lines.
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


#: (logger, message template) of RQ's per-job INFO lines (rq 3.0: rq/worker/base.py);
#: a template ending in "*" is a prefix (RQ formats some with f-strings).
RQ_PER_JOB_LINES = frozenset(
    {
        ("rq.worker", "Worker %s: %s: %s (%s)"),  # job started (with description), Job OK
        ("rq.worker", "Worker %s: %s: %s"),  # job started (without description)
        ("rq.worker", "Successfully completed %s job in %ss on worker %s"),
        ("rq.worker", "Successfully completed job %s in %ss on worker %s"),
        ("rq.worker", "Worker %s: job %s result is kept for %s seconds"),
        ("rq.worker", "Worker %s: job %s result discarded immediately"),
        ("rq.worker", "Worker %s: job %s result will never expire, clean up result key manually"),
        ("rq.cron", "Enqueued job *"),
        # Routine maintenance, every RQ_MAINTENANCE_INTERVAL_SECONDS (15) per idle worker:
        ("rq.worker", "Worker %s: cleaning registries for queue: %s"),
        ("rq.worker", "Worker %s: cleaning group registries"),
    }
)
_RQ_PREFIXES = tuple((name, msg[:-1]) for name, msg in RQ_PER_JOB_LINES if msg.endswith("*"))


def _rq_per_job(record: logging.LogRecord) -> bool:
    if not record.name.startswith("rq.") or not isinstance(record.msg, str):
        return False
    if (record.name, record.msg) in RQ_PER_JOB_LINES:
        return True
    return any(record.name == n and record.msg.startswith(p) for n, p in _RQ_PREFIXES)


class QuietRQJobLines(logging.Filter):
    """Demote RQ's per-job INFO lines to DEBUG; drop them below the root level."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and _rq_per_job(record):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


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
    handler.addFilter(QuietRQJobLines())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processors=[*final, renderer])
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
