"""Configuration, read only from environment variables.

Every variable is documented in the README's configuration table; keep the two
in step.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from state_machine.events import CODAT_DATA_TYPES


class ConfigError(RuntimeError):
    """The environment does not describe a runnable service; the message says how."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = (env.get(name) or "0").strip().lower()
    if raw not in ("0", "1", "true", "false", "yes", "no"):
        raise ConfigError(f"{name} must be 1 or 0, got {raw!r}")
    return raw in ("1", "true", "yes")


def _schedule(raw: str | None) -> tuple[int, ...]:
    if not raw:
        return Settings.delivery_schedule
    try:
        delays = tuple(int(part) for part in raw.split(","))
    except ValueError as exc:
        raise ConfigError("DELIVERY_RETRY_SCHEDULE must be comma-separated seconds") from exc
    if not delays or any(d < 0 for d in delays) or delays[0] != 0:
        raise ConfigError("DELIVERY_RETRY_SCHEDULE must start with 0 and hold no negative delay")
    return delays


def _secrets(raw: str) -> tuple[str, ...]:
    secrets = tuple(part.strip() for part in raw.split(",") if part.strip())
    for secret in secrets:
        if not secret.startswith("whsec_"):
            raise ConfigError("CODAT_WEBHOOK_SECRETS entries must look like whsec_<base64>")
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


def _url(env: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{name} must be an absolute http(s) URL, got {raw!r}")
    return raw


def _delivery_settings(env: Mapping[str, str]) -> dict[str, int]:
    values = {
        "delivery_concurrency": _int(env, "DELIVERY_CONCURRENCY", 16),
        "delivery_max_in_flight": _int(env, "DELIVERY_MAX_IN_FLIGHT_PER_SUBSCRIPTION", 4),
        "delivery_breaker_failures": _int(env, "DELIVERY_BREAKER_FAILURES", 5),
        "delivery_breaker_cooldown_seconds": _int(env, "DELIVERY_BREAKER_COOLDOWN_SECONDS", 15),
        "delivery_pump_max_seconds": _int(env, "DELIVERY_PUMP_MAX_SECONDS", 20),
        "delivery_pump_idle_ms": _int(env, "DELIVERY_PUMP_IDLE_MS", 500),
    }
    if values["delivery_pump_max_seconds"] > 30:  # its RQ job times out at 60 s
        raise ConfigError("DELIVERY_PUMP_MAX_SECONDS must be at most 30")
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

    @property
    def development(self) -> bool:
        return self.app_env == "development"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        missing = [
            name
            for name in ("REDIS_URL", "API_TOKEN", "CODAT_WEBHOOK_SECRETS")
            if not env.get(name, "").strip()
        ]
        if missing:
            raise ConfigError(
                "missing environment variables: "
                + ", ".join(missing)
                + " (see the README's configuration table; `scripts/run-stack` sets them"
                " for development)"
            )
        app_env = env.get("APP_ENV", "production").strip() or "production"
        if app_env not in ("production", "development"):
            raise ConfigError("APP_ENV must be 'production' or 'development'")
        return cls(
            redis_url=env["REDIS_URL"].strip(),
            api_token=env["API_TOKEN"].strip(),
            webhook_secrets=_secrets(env["CODAT_WEBHOOK_SECRETS"]),
            webhook_authorization=env.get("CODAT_WEBHOOK_AUTHORIZATION") or None,
            app_env=app_env,
            log_level=(env.get("LOG_LEVEL") or "INFO").upper(),
            key_prefix=env.get("KEY_PREFIX") or "authflow",
            queue_name=env.get("RQ_QUEUE") or "authflow",
            dedupe_ttl_seconds=_int(env, "WEBHOOK_DEDUPE_TTL_SECONDS", 72 * 3600, minimum=3600),
            history_limit=_int(env, "COMPANY_HISTORY_LIMIT", 25),
            event_log_limit=_int(env, "COMPANY_EVENT_LOG_LIMIT", 50, minimum=0),
            inbox_batch_size=_int(env, "INBOX_BATCH_SIZE", 200),
            inbox_visibility_timeout_seconds=_int(env, "INBOX_VISIBILITY_TIMEOUT_SECONDS", 30),
            inbox_max_deliveries=_int(env, "INBOX_MAX_DELIVERIES", 5),
            drain_max_seconds=_int(env, "DRAIN_MAX_SECONDS", 20),
            drain_idle_ms=_int(env, "DRAIN_IDLE_MS", 250),
            delivery_queue_name=env.get("RQ_DELIVERY_QUEUE") or "authflow-deliveries",
            allow_private_subscriber_urls=_flag(env, "ALLOW_PRIVATE_SUBSCRIBER_URLS"),
            delivery_schedule=_schedule(env.get("DELIVERY_RETRY_SCHEDULE")),
            rq_maintenance_interval_seconds=_int(env, "RQ_MAINTENANCE_INTERVAL_SECONDS", 15),
            sweep_interval_seconds=_int(env, "SWEEP_INTERVAL_SECONDS", 10),
            **_delivery_settings(env),
            codat_api_key=(env.get("CODAT_API_KEY") or "").strip() or None,
            codat_base_url=_url(env, "CODAT_BASE_URL", "https://api.codat.io").rstrip("/"),
            codat_connect_timeout_seconds=_int(env, "CODAT_CONNECT_TIMEOUT_SECONDS", 3),
            codat_timeout_seconds=_int(env, "CODAT_TIMEOUT_SECONDS", 10),
            link_success_url=_url(env, "LINK_SUCCESS_URL"),
            link_failure_url=_url(env, "LINK_FAILURE_URL"),
            api_max_body_bytes=_int(env, "API_MAX_BODY_BYTES", 64 * 1024, minimum=1024),
            branding_cache_seconds=_int(env, "BRANDING_CACHE_SECONDS", 24 * 3600),
            link_url_lifetime_seconds=_int(env, "LINK_URL_LIFETIME_SECONDS", 24 * 3600),
            reconcile_linking_after_seconds=_int(env, "RECONCILE_LINKING_AFTER_SECONDS", 1800),
            reconcile_linked_after_seconds=_int(env, "RECONCILE_LINKED_AFTER_SECONDS", 900),
            reconcile_syncing_after_seconds=_int(env, "RECONCILE_SYNCING_AFTER_SECONDS", 3600),
            reconcile_interval_seconds=_int(env, "RECONCILE_INTERVAL_SECONDS", 60),
            reconcile_batch_size=_int(env, "RECONCILE_BATCH_SIZE", 50),
            reconcile_max_seconds=_int(env, "RECONCILE_MAX_SECONDS", 60),
            ready_data_types=_data_types(env.get("READY_DATA_TYPES")),
            refresh_max_tries=_int(env, "RECONCILE_REFRESH_MAX_TRIES", 3, minimum=0),
            refresh_backoff_seconds=_int(env, "RECONCILE_REFRESH_BACKOFF_SECONDS", 900),
            ops_token=(env.get("OPS_TOKEN") or "").strip() or None,
            metrics_public=_flag(env, "METRICS_PUBLIC"),
            trusted_proxies=_int(env, "TRUSTED_PROXIES", 0, minimum=0),
        )
