"""Configuration, read only from environment variables.

Every variable is documented in the README's configuration table; keep the two
in step.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field


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


def _secrets(raw: str) -> tuple[str, ...]:
    secrets = tuple(part.strip() for part in raw.split(",") if part.strip())
    for secret in secrets:
        if not secret.startswith("whsec_"):
            raise ConfigError("CODAT_WEBHOOK_SECRETS entries must look like whsec_<base64>")
    return secrets


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
    inbox_batch_size: int = 200
    inbox_visibility_timeout_seconds: int = 30
    inbox_max_deliveries: int = 5
    drain_max_seconds: int = 20

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
            inbox_batch_size=_int(env, "INBOX_BATCH_SIZE", 200),
            inbox_visibility_timeout_seconds=_int(env, "INBOX_VISIBILITY_TIMEOUT_SECONDS", 30),
            inbox_max_deliveries=_int(env, "INBOX_MAX_DELIVERIES", 5),
            drain_max_seconds=_int(env, "DRAIN_MAX_SECONDS", 20),
        )
