"""One way to build the Redis connection, for every process."""

from __future__ import annotations

from redis import Redis


def connect(url: str) -> Redis:
    """Bytes in, bytes out (RQ stores pickled data, so no decode_responses).

    Short timeouts: the receiver must answer in milliseconds, and a Redis that
    does not answer is reported as 503 so Codat retries, not waited on."""
    return Redis.from_url(
        url,
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=30,
        retry_on_timeout=False,
    )
