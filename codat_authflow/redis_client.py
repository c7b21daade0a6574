"""One way to build the Redis connection, for every process (web, workers,
clock, CLI) and for RQ, which is handed the same client.

`REDIS_URL` names one server (or a managed endpoint that follows
failovers). `REDIS_SENTINELS` (with `REDIS_SENTINEL_MASTER`) asks Redis
Sentinel instead, through redis-py's `Sentinel.master_for`: its
`SentinelConnectionPool` looks the primary up each time it opens a
connection, and drops a connection whose server has been demoted (a
`READONLY` answer becomes a `ConnectionError`), so after a failover the next
command, pipeline or blocking pop reaches the new primary. RQ's scheduler
process rebuilds its client from this one's pool settings, which carry the
Sentinel lookup with them.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from redis import Redis
from redis.sentinel import Sentinel

from codat_authflow.settings import Settings

#: Short timeouts: the receiver must answer in milliseconds, and a Redis that
#: does not answer is reported as 503 so Codat retries, not waited on.
CONNECT_TIMEOUT_SECONDS = 2
SOCKET_TIMEOUT_SECONDS = 5


def connect(settings: Settings) -> Redis:
    """Bytes in, bytes out (RQ stores pickled data, so no decode_responses)."""
    options = {
        "socket_connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "socket_timeout": SOCKET_TIMEOUT_SECONDS,
        "health_check_interval": 30,
        "retry_on_timeout": False,
    }
    if not settings.redis_sentinels:
        return Redis.from_url(settings.redis_url, **options)
    sentinel = Sentinel(
        list(settings.redis_sentinels),
        sentinel_kwargs={
            "password": settings.redis_sentinel_password,
            "socket_connect_timeout": CONNECT_TIMEOUT_SECONDS,
            "socket_timeout": CONNECT_TIMEOUT_SECONDS,
        },
    )
    return sentinel.master_for(
        settings.redis_sentinel_master, password=settings.redis_password, **options
    )


def describe(settings: Settings) -> str:
    """Where Redis is, without credentials: for logs and the ops pages."""
    if settings.redis_sentinels:
        hosts = ",".join(f"{host}:{port}" for host, port in settings.redis_sentinels)
        return f"sentinel://{hosts}/{settings.redis_sentinel_master}"
    parts = urlsplit(settings.redis_url)
    host = parts.hostname or "localhost"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
