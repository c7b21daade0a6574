"""Configuration, read only from environment variables.

Every variable is documented in docs/operations.md's configuration table; keep the two
in step.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from state_machine.events import CODAT_DATA_TYPES

T = TypeVar("T")


class ConfigError(RuntimeError):
    """The environment does not describe a runnable service.

    ``problems`` holds one line per problem, each naming its variable
    (``CODAT_WEBHOOK_SECRETS: entry 1 ('whsec_!!!') is not valid base64``);
    the message is those lines joined."""

    def __init__(self, problems: str | list[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


_LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "WARN", "INFO", "DEBUG")
#: Read by the Procfile and app/gunicorn_conf.py rather than by Settings; checked
#: here too, so that a bad value is one line at start-up, not a traceback.
_PROCESS_INTEGERS = ("PORT", "WEB_CONCURRENCY", "GUNICORN_THREADS")


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = (env.get(name) or "").strip()
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}: must be an integer, got {raw!r}") from exc
    if value < minimum:
        raise ConfigError(f"{name}: must be at least {minimum}, got {value}")
    return value


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = (env.get(name) or "0").strip().lower()
    if raw not in ("0", "1", "true", "false", "yes", "no"):
        raise ConfigError(f"{name}: must be 1 or 0, got {raw!r}")
    return raw in ("1", "true", "yes")


def _schedule(raw: str | None) -> tuple[int, ...]:
    if not raw:
        return Settings.delivery_schedule
    try:
        delays = tuple(int(part) for part in raw.split(","))
    except ValueError as exc:
        raise ConfigError(
            f"DELIVERY_RETRY_SCHEDULE: must be comma-separated seconds, got {raw!r}"
        ) from exc
    if not delays or any(d < 0 for d in delays) or delays[0] != 0:
        raise ConfigError(
            f"DELIVERY_RETRY_SCHEDULE: must start with 0 and hold no negative delay, got {raw!r}"
        )
    return delays


def _shown(secret: str) -> str:
    """Enough of a bad secret to find it, not enough to use it."""
    return repr(secret if len(secret) <= 12 else secret[:10] + "...")


def _secret_problem(secret: str) -> str | None:
    if not secret.startswith("whsec_"):
        return "does not start with whsec_ (expected whsec_<base64>)"
    body = secret.removeprefix("whsec_")
    try:
        # As svix reads it (missing padding allowed), but strictly: svix would
        # skip characters outside base64's alphabet, or fail with a bare binascii.Error.
        key = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        return "is not valid base64"
    return None if key else "is empty after whsec_"


def _secrets(raw: str) -> tuple[str, ...]:
    secrets = tuple(part.strip() for part in raw.split(",") if part.strip())
    if not secrets:
        raise ConfigError("CODAT_WEBHOOK_SECRETS: no secret in it (expected whsec_<base64>)")
    problems = [
        f"CODAT_WEBHOOK_SECRETS: entry {number} ({_shown(secret)}) {problem}"
        for number, secret in enumerate(secrets, start=1)
        if (problem := _secret_problem(secret))
    ]
    if problems:
        raise ConfigError(problems)
    return secrets


def _data_types(raw: str | None) -> tuple[str, ...]:
    names = sorted({part.strip() for part in (raw or "").split(",") if part.strip()})
    for name in names:
        if name not in CODAT_DATA_TYPES:
            close = difflib.get_close_matches(name, CODAT_DATA_TYPES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"READY_DATA_TYPES: {name!r} is not one of Codat's data types{hint}; "
                "use comma-separated names such as balanceSheet,profitAndLoss"
            )
    return tuple(names)


def _sentinels(raw: str | None) -> tuple[tuple[str, int], ...]:
    """`host:port,host:port` (REDIS_SENTINELS); an IPv6 host in brackets."""
    found = []
    for part in (raw or "").split(","):
        part = part.strip()
        if not part:
            continue
        host, _, port = part.rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"REDIS_SENTINELS: {part!r} is not host:port")
        found.append((host, int(port)))
    return tuple(found)


def _url(env: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{name}: must be an absolute http(s) URL, got {raw!r}")
    return raw


_CONNECT_SOURCE_TYPES = ("Accounting", "Banking", "Commerce")


def _source_types(raw: str | None) -> tuple[str, ...]:
    names: list[str] = []
    for part in (raw or "Accounting").split(","):
        name = part.strip().capitalize()
        if not name:
            continue
        if name not in _CONNECT_SOURCE_TYPES:
            raise ConfigError(
                f"CONNECT_SOURCE_TYPES: {part.strip()!r} is not one of "
                + ", ".join(_CONNECT_SOURCE_TYPES)
            )
        if name not in names:
            names.append(name)
    if not names:
        raise ConfigError("CONNECT_SOURCE_TYPES must name at least one source type")
    return tuple(names)


def _colour(env: Mapping[str, str], name: str, default: str) -> str:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    if not re.fullmatch(r"#[0-9a-fA-F]{6}", raw):
        raise ConfigError(f"{name} must be a colour like #1a56db, got {raw!r}")
    return raw.lower()


def _float(env: Mapping[str, str], name: str) -> float | None:
    raw = (env.get(name) or "").strip()
    try:
        value = float(raw) if raw else None
    except ValueError:
        raise ConfigError(f"{name}: must be a number of seconds, got {raw!r}") from None
    if value is not None and value <= 0:
        raise ConfigError(f"{name}: must be more than 0, got {raw!r}")
    return value


def _redis_url(raw: str) -> str:
    """Only the shape is checked here; redis_client.py builds the connection."""
    raw = raw.strip()
    if not re.match(r"^[a-z][a-z0-9+.-]*://", raw, re.IGNORECASE):
        raise ConfigError(
            "REDIS_URL: must be a URL such as redis://127.0.0.1:6379/0, got "
            + repr(re.sub(r"^.*@", "***@", raw))  # no password in the message
        )
    return raw


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    """One of ``choices``, whatever the case it was written in."""
    raw = (env.get(name) or "").strip() or default
    canonical = {choice.upper(): choice for choice in choices}.get(raw.upper())
    if canonical is None:
        raise ConfigError(f"{name}: must be one of {', '.join(choices)}, got {raw!r}")
    return canonical


class _Reader:
    """Parses variables one by one and collects every problem instead of
    stopping at the first."""

    def __init__(self, env: Mapping[str, str]):
        self.env = env
        self.problems: list[str] = []

    def __call__(self, parse: Callable[..., T], *args: Any, fallback: Any = None) -> T:
        try:
            return parse(*args)
        except ConfigError as exc:
            self.problems.extend(exc.problems)
            return fallback

    def required(self, name: str) -> str:
        value = (self.env.get(name) or "").strip()
        if not value:
            self.problems.append(
                f"{name}: not set (required; see docs/operations.md#configuration; "
                "scripts/run-stack sets it for development)"
            )
        return value

    def number(self, name: str, default: int, minimum: int = 1) -> int:
        return self(_int, self.env, name, default, minimum, fallback=default)


def config_problems(env: Mapping[str, str] | None = None) -> list[str]:
    """Every problem with the configuration in ``env`` (default: os.environ),
    one line each, naming the variable; empty if the service can start."""
    env = os.environ if env is None else env
    try:
        Settings.from_env(env)
    except ConfigError as exc:
        return exc.problems
    return []


def settings_or_exit(program: str, env: Mapping[str, str] | None = None) -> Settings:
    """The entrypoints' start: the settings, or each problem on its own line
    on stderr (``program: VARIABLE: ...``) and exit status 2, no traceback."""
    try:
        return Settings.from_env(env)
    except ConfigError as exc:
        for line in exc.problems:
            print(f"{program}: {line}", file=sys.stderr)
        raise SystemExit(2) from None


def _delivery_settings(read: _Reader) -> dict[str, int]:
    number = read.number
    values = {
        "delivery_concurrency": number("DELIVERY_CONCURRENCY", 16),
        "delivery_max_in_flight": number("DELIVERY_MAX_IN_FLIGHT_PER_SUBSCRIPTION", 4),
        "delivery_breaker_failures": number("DELIVERY_BREAKER_FAILURES", 5),
        "delivery_breaker_cooldown_seconds": number("DELIVERY_BREAKER_COOLDOWN_SECONDS", 15),
        "delivery_pump_max_seconds": number("DELIVERY_PUMP_MAX_SECONDS", 20),
        "delivery_pump_idle_ms": number("DELIVERY_PUMP_IDLE_MS", 500),
    }
    if values["delivery_pump_max_seconds"] > 30:  # its RQ job times out at 60 s
        got = values["delivery_pump_max_seconds"]
        read.problems.append(f"DELIVERY_PUMP_MAX_SECONDS: must be at most 30, got {got}")
        values["delivery_pump_max_seconds"] = 20
    return values


@dataclass(frozen=True)
class Settings:
    redis_url: str
    api_token: str = field(repr=False)
    webhook_secrets: tuple[str, ...] = field(repr=False)
    webhook_authorization: str | None = field(default=None, repr=False)
    app_env: str = "production"
    log_level: str = "INFO"
    key_prefix: str = "authflow"
    queue_name: str = "authflow"
    dedupe_ttl_seconds: int = 72 * 3600
    max_body_bytes: int = 1024 * 1024
    history_limit: int = 25
    event_log_limit: int = 50
    inbox_batch_size: int = 200
    inbox_visibility_timeout_seconds: int = 30
    inbox_max_deliveries: int = 5
    drain_max_seconds: int = 20
    drain_idle_ms: int = 250
    delivery_queue_name: str = "authflow-deliveries"
    allow_private_subscriber_urls: bool = False
    # Seconds before each delivery attempt: Codat's own schedule, about 28 h in all.
    delivery_schedule: tuple[int, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    rq_maintenance_interval_seconds: int = 15
    sweep_interval_seconds: int = 10
    # The delivery pump (codat_authflow/delivery/pump.py): attempts in flight per
    # pump and per subscription, the circuit breaker, how long a pump job runs.
    delivery_concurrency: int = 16
    delivery_max_in_flight: int = 4
    delivery_breaker_failures: int = 5
    delivery_breaker_cooldown_seconds: int = 15
    delivery_pump_max_seconds: int = 20
    delivery_pump_idle_ms: int = 500
    # Codat's Platform API (the authorization journey) and reconciliation.
    codat_api_key: str | None = field(default=None, repr=False)
    codat_base_url: str = "https://api.codat.io"
    codat_connect_timeout_seconds: int = 3
    codat_timeout_seconds: int = 10
    link_success_url: str | None = None
    link_failure_url: str | None = None
    api_max_body_bytes: int = 64 * 1024
    branding_cache_seconds: int = 24 * 3600
    link_url_lifetime_seconds: int = 24 * 3600
    reconcile_linking_after_seconds: int = 30 * 60
    reconcile_linked_after_seconds: int = 15 * 60
    reconcile_syncing_after_seconds: int = 60 * 60
    reconcile_interval_seconds: int = 60
    reconcile_batch_size: int = 50
    reconcile_max_seconds: int = 60
    # Readiness: the data types that must be read completely (empty: any one,
    # from an initial read); and how reconciliation re-queues failed reads.
    ready_data_types: tuple[str, ...] = ()
    refresh_max_tries: int = 3
    refresh_backoff_seconds: int = 15 * 60
    # Operations (app/ops): a separate token for /ops and /metrics, public metrics.
    ops_token: str | None = field(default=None, repr=False)
    metrics_public: bool = False
    # Proxy hops in front of gunicorn whose X-Forwarded-For/-Proto are trusted
    # (werkzeug's ProxyFix); 0: the socket's peer is the client.
    trusted_proxies: int = 0
    # The connect pages (app/connect): signed links, look, source types, limits.
    connect_secret: str | None = field(default=None, repr=False)
    connect_link_lifetime_seconds: int = 7 * 24 * 3600
    connect_source_types: tuple[str, ...] = ("Accounting",)
    connect_base_url: str | None = None
    connect_brand_name: str = "Your lender"
    connect_logo_url: str | None = None
    connect_accent_colour: str = "#1a56db"
    connect_creations_per_hour: int = 10
    # Redis Sentinel (instead of REDIS_URL): where the sentinels are, the name of
    # the monitored primary, passwords. REDIS_MIN_REPLICAS_ACK > 0: the receiver's
    # 2xx waits (WAIT, at most REDIS_REPLICA_ACK_TIMEOUT_MS) for that many replicas.
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_sentinel_master: str = "authflow"
    redis_sentinel_password: str | None = field(default=None, repr=False)
    redis_password: str | None = field(default=None, repr=False)
    redis_min_replicas_ack: int = 0
    redis_replica_ack_timeout_ms: int = 200
    # RQ workers: seconds a worker's registration outlives its last heartbeat
    # (a SIGKILLed idle worker leaves /ops/rq and authflow_rq_workers after this).
    rq_worker_ttl_seconds: int = 45

    @property
    def development(self) -> bool:
        return self.app_env == "development"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings, or `ConfigError` listing every problem (not only the first)."""
        env = os.environ if env is None else env
        read = _Reader(env)
        values = cls._read(read)
        for name in _PROCESS_INTEGERS:
            read.number(name, 0, minimum=1)
        read(_float, env, "GUNICORN_BODY_READ_TIMEOUT")
        if read.problems:
            raise ConfigError(read.problems)
        return cls(**values)

    @classmethod
    def _read(cls, read: _Reader) -> dict[str, Any]:
        env, number = read.env, read.number
        # With Sentinel (REDIS_SENTINELS), REDIS_URL is not needed.
        sentinels = read(_sentinels, env.get("REDIS_SENTINELS"), fallback=())
        with_sentinel = bool((env.get("REDIS_SENTINELS") or "").strip())
        redis_url = (
            (env.get("REDIS_URL") or "").strip() if with_sentinel else read.required("REDIS_URL")
        )
        api_token = read.required("API_TOKEN")
        secrets = read.required("CODAT_WEBHOOK_SECRETS")
        return dict(
            redis_url=redis_url and read(_redis_url, redis_url),
            api_token=api_token,
            webhook_secrets=secrets and read(_secrets, secrets, fallback=()),
            webhook_authorization=env.get("CODAT_WEBHOOK_AUTHORIZATION") or None,
            app_env=read(_choice, env, "APP_ENV", "production", ("production", "development")),
            log_level=read(_choice, env, "LOG_LEVEL", "INFO", _LOG_LEVELS),
            key_prefix=env.get("KEY_PREFIX") or "authflow",
            queue_name=env.get("RQ_QUEUE") or "authflow",
            dedupe_ttl_seconds=number("WEBHOOK_DEDUPE_TTL_SECONDS", 72 * 3600, minimum=3600),
            history_limit=number("COMPANY_HISTORY_LIMIT", 25),
            event_log_limit=number("COMPANY_EVENT_LOG_LIMIT", 50, minimum=0),
            inbox_batch_size=number("INBOX_BATCH_SIZE", 200),
            inbox_visibility_timeout_seconds=number("INBOX_VISIBILITY_TIMEOUT_SECONDS", 30),
            inbox_max_deliveries=number("INBOX_MAX_DELIVERIES", 5),
            drain_max_seconds=number("DRAIN_MAX_SECONDS", 20),
            drain_idle_ms=number("DRAIN_IDLE_MS", 250),
            delivery_queue_name=env.get("RQ_DELIVERY_QUEUE") or "authflow-deliveries",
            allow_private_subscriber_urls=read(_flag, env, "ALLOW_PRIVATE_SUBSCRIBER_URLS"),
            delivery_schedule=read(_schedule, env.get("DELIVERY_RETRY_SCHEDULE")),
            rq_maintenance_interval_seconds=number("RQ_MAINTENANCE_INTERVAL_SECONDS", 15),
            sweep_interval_seconds=number("SWEEP_INTERVAL_SECONDS", 10),
            **_delivery_settings(read),
            codat_api_key=(env.get("CODAT_API_KEY") or "").strip() or None,
            codat_base_url=(
                read(_url, env, "CODAT_BASE_URL", "https://api.codat.io", fallback="") or ""
            ).rstrip("/"),
            codat_connect_timeout_seconds=number("CODAT_CONNECT_TIMEOUT_SECONDS", 3),
            codat_timeout_seconds=number("CODAT_TIMEOUT_SECONDS", 10),
            link_success_url=read(_url, env, "LINK_SUCCESS_URL"),
            link_failure_url=read(_url, env, "LINK_FAILURE_URL"),
            api_max_body_bytes=number("API_MAX_BODY_BYTES", 64 * 1024, minimum=1024),
            branding_cache_seconds=number("BRANDING_CACHE_SECONDS", 24 * 3600),
            link_url_lifetime_seconds=number("LINK_URL_LIFETIME_SECONDS", 24 * 3600),
            reconcile_linking_after_seconds=number("RECONCILE_LINKING_AFTER_SECONDS", 1800),
            reconcile_linked_after_seconds=number("RECONCILE_LINKED_AFTER_SECONDS", 900),
            reconcile_syncing_after_seconds=number("RECONCILE_SYNCING_AFTER_SECONDS", 3600),
            reconcile_interval_seconds=number("RECONCILE_INTERVAL_SECONDS", 60),
            reconcile_batch_size=number("RECONCILE_BATCH_SIZE", 50),
            reconcile_max_seconds=number("RECONCILE_MAX_SECONDS", 60),
            ready_data_types=read(_data_types, env.get("READY_DATA_TYPES"), fallback=()),
            refresh_max_tries=number("RECONCILE_REFRESH_MAX_TRIES", 3, minimum=0),
            refresh_backoff_seconds=number("RECONCILE_REFRESH_BACKOFF_SECONDS", 900),
            ops_token=(env.get("OPS_TOKEN") or "").strip() or None,
            metrics_public=read(_flag, env, "METRICS_PUBLIC"),
            trusted_proxies=number("TRUSTED_PROXIES", 0, minimum=0),
            connect_secret=(env.get("CONNECT_SECRET") or "").strip() or None,
            connect_link_lifetime_seconds=number(
                "CONNECT_LINK_LIFETIME_SECONDS", 7 * 24 * 3600, minimum=60
            ),
            connect_source_types=read(
                _source_types, env.get("CONNECT_SOURCE_TYPES"), fallback=("Accounting",)
            ),
            connect_base_url=(read(_url, env, "CONNECT_BASE_URL") or "").rstrip("/") or None,
            connect_brand_name=(env.get("CONNECT_BRAND_NAME") or "").strip() or "Your lender",
            connect_logo_url=(env.get("CONNECT_LOGO_URL") or "").strip() or None,
            connect_accent_colour=read(
                _colour, env, "CONNECT_ACCENT_COLOUR", "#1a56db", fallback="#1a56db"
            ),
            connect_creations_per_hour=number("CONNECT_CREATIONS_PER_HOUR", 10),
            redis_sentinels=sentinels,
            redis_sentinel_master=(env.get("REDIS_SENTINEL_MASTER") or "").strip() or "authflow",
            redis_sentinel_password=env.get("REDIS_SENTINEL_PASSWORD") or None,
            redis_password=env.get("REDIS_PASSWORD") or None,
            redis_min_replicas_ack=number("REDIS_MIN_REPLICAS_ACK", 0, minimum=0),
            redis_replica_ack_timeout_ms=number("REDIS_REPLICA_ACK_TIMEOUT_MS", 200),
            rq_worker_ttl_seconds=number("RQ_WORKER_TTL_SECONDS", 45, minimum=20),
        )
