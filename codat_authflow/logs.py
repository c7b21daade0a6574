"""structlog set-up: JSON lines in production, readable console in development.

Our own structlog calls are rendered by structlog itself, with `orjson`, and
written straight to stdout: the standard library's logging would build two
LogRecords and walk the stack for every line (about 4x the CPU; a webhook's
request line was a sixth of the receiver's cost). The standard-library
loggers of rq, gunicorn and redis still go through `logging`, into the same
renderer and the same output, so every line of a process has one format.
Secrets never reach a line: any key naming a secret, signature, token,
password or authorization is replaced, wherever it comes from.

RQ's own per-job lines (a job started, "Successfully completed", "Job OK",
"result is kept for 60 seconds", the cron scheduler's "Enqueued job") and its
routine "cleaning registries" lines are demoted to DEBUG: our worker writes
one line per job (`event: job`) with the same facts, and at INFO an idle
stack wrote 84 lines a minute, most of them RQ's four or five per sweep.
With LOG_LEVEL=DEBUG they are back, as debug lines.
"""

from __future__ import annotations

import json
import logging
import sys
from functools import lru_cache
from typing import Any, TextIO

import orjson
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


def _dumps(event_dict: dict[str, Any], **_: Any) -> str:
    try:
        return orjson.dumps(event_dict, default=repr, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # what orjson refuses (an int past 64 bits): the standard library's
        return json.dumps(event_dict, default=repr)


_json = structlog.processors.JSONRenderer(serializer=_dumps)


class _Output:
    """Where every line goes, and from what level. structlog caches each
    module's logger on first use, holding this object: `configure_logging`
    changes what it points at (stdout, or a test's buffer), not the object."""

    def __init__(self) -> None:
        self.stream: TextIO = sys.stdout
        self.level = logging.INFO
        self.development = False
        self.renderer: Any = _json

    def write(self, text: str) -> None:
        self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


_output = _Output()


def _below_level(_logger, method: str, event_dict):
    if _LEVELS.get(method, logging.INFO) < _output.level:
        raise structlog.DropEvent
    return event_dict


_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
}


def _render(logger, method: str, event_dict) -> str:
    return _output.renderer(logger, method, event_dict)


class _NamedWriteLogger(structlog.WriteLogger):
    """structlog's WriteLogger with the name it was asked for (the `logger` key)."""

    def __init__(self, name: str):
        super().__init__(_output)  # type: ignore[arg-type]
        self.name = name


def _logger_factory(*args: Any) -> _NamedWriteLogger:
    return _NamedWriteLogger(str(args[0]) if args else "")


_SHARED = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    redact_secrets,
]


def _format_exc_info(logger, method: str, event_dict):
    if _output.development:  # the console renderer prints the traceback itself
        return event_dict
    return structlog.processors.format_exc_info(logger, method, event_dict)


def configure_logging(
    level: str = "INFO", *, development: bool = False, stream: TextIO | None = None
) -> None:
    """Every line of the process at `level` and above, to `stream` (stdout)."""
    _output.stream = stream if stream is not None else sys.stdout
    _output.level = logging.getLevelName(level.upper())
    _output.development = development
    colors = _output.stream.isatty()
    _output.renderer = structlog.dev.ConsoleRenderer(colors=colors) if development else _json
    structlog.configure(
        processors=[_below_level, *_SHARED, _format_exc_info, _render],
        logger_factory=_logger_factory,
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(_output)  # type: ignore[arg-type]
    handler.addFilter(QuietRQJobLines())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=_SHARED,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _format_exc_info,
                _render,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
