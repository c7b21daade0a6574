"""One command on a pooled connection, without redis-py's client layer.

For the receiver's one command per webhook (the inbox's accept script).
redis-py's client wraps each call in its retry, deprecation-warning and
observability layers and response callbacks: on this machine a pooled
PING costs ~75-100 us of user CPU through the client and ~35-45 us sent on
a connection directly, about a tenth of a webhook's CPU under gunicorn
(`python -m perf.receiver_cost` shows the share).

Everything that protects the connection stays redis-py's, through the pool:
`get_connection` reconnects a connection the server closed or left with
unread data, checks the process (a forked child never shares a socket), and
under Sentinel a (re)connect looks the primary up; `release` hands it back.
A connection that failed mid-command is disconnected first, as the client
does, so the next command opens a fresh one. Like our client (no retries),
a failure is raised: the receiver answers 503 and Codat retries.
"""

from __future__ import annotations

from typing import Any

from redis import ConnectionPool
from redis.exceptions import ResponseError


def execute_raw(pool: ConnectionPool, *args: Any) -> Any:
    """Send `args` as one command and return its reply, or raise what Redis answered."""
    connection = pool.get_connection()
    try:
        connection.send_command(*args)
        return connection.read_response()
    except ResponseError:  # Redis answered: the connection is in step
        raise
    except BaseException:  # a broken or half-read connection is never reused
        connection.disconnect()
        raise
    finally:
        pool.release(connection)
