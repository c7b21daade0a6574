"""One command on a connection of the calling thread's own, in two system calls.

For the receiver's one command per webhook (the inbox's accept script), which
decides the web tier's throughput: with the accept replaced by a constant
(`python -m perf.receiver --variants without_store`) the receiver served
0.83-1.0x bare Flask's requests; with it, sent through redis-py's pool,
about 0.65x. The command itself is cheap for Redis (~0.06 ms); what cost the
receiver was everything around it in a threaded gunicorn worker:

* redis-py's client wraps each call in its retry, deprecation-warning and
  observability layers and response callbacks, and its pool takes a lock and
  records connection-count metrics on every checkout and return;
* every socket call releases the GIL, and while a webhook's thread is away
  another request's thread takes it: each release costs a hand-over and
  often two context switches. Through the pool a command made seven such
  calls: the pool's "anything to read?" check (set non-blocking, recv, set
  back) and, because Python implements socket timeouts with poll(), a poll
  before the send and another before the read.

So each thread (gthread runs requests on a pool of threads) keeps one
connection, made from the pool's own connection class and settings (the same
address, credentials and health checks; under Sentinel, the same primary
lookup on every (re)connect), and the timeouts are the kernel's
(SO_RCVTIMEO/SO_SNDTIMEO on a blocking socket): a command is one send and one
receive. Nothing is lost:

* a timeout still fails the command after the same `socket_timeout`, as a
  ConnectionError: the receiver answers 503 and Codat retries;
* a connection made in another process (a fork) is never used;
* a connection Redis closed (CLIENT KILL, a restart, an idle timeout) is not
  probed before use: the command fails at once, and is sent again, once, on
  a new connection. Sending it again is safe because the accept script is
  idempotent (a webhook id seen is a duplicate, not a second entry). A
  timeout is not retried: a Redis that does not answer gets a 503 within
  `socket_timeout`, not twice that;
* a connection that failed mid-command is disconnected, never reused.
"""

from __future__ import annotations

import os
import socket
import ssl
import struct
import threading
from typing import Any

from redis import ConnectionPool
from redis.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


class ThreadConnections:
    """Commands sent on the calling thread's own connection to `pool`'s server.
    Only for commands that are safe to send twice (see the module's docstring)."""

    def __init__(self, pool: ConnectionPool):
        self.pool = pool
        self._local = threading.local()

    def execute(self, *args: Any) -> Any:
        """Send `args` as one command and return its reply, or raise what Redis answered."""
        connection = self._connection()
        proven = self._local.proven  # it has carried a command: it may have gone stale since
        try:
            return self._round_trip(connection, args)
        except (RedisConnectionError, OSError) as exc:
            if not proven or _timed_out(exc):
                raise
        return self._round_trip(connection, args)  # reconnects: `connect` runs first

    def _round_trip(self, connection: AbstractConnection, args: tuple) -> Any:
        try:
            connection.send_command(*args)
            reply = connection.read_response()
        except ResponseError:  # Redis answered: the connection is in step
            self._local.proven = True
            raise
        except BaseException:  # a broken or half-read connection is never reused
            connection.disconnect()
            self._local.proven = False
            raise
        self._local.proven = True
        return reply

    def _connection(self) -> AbstractConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None or connection.pid != os.getpid():
            connection = self.pool.connection_class(**self.pool.connection_kwargs)
            connection.register_connect_callback(self._use_kernel_timeouts)
            self._local.connection, self._local.proven = connection, False
        return connection  # send_command connects it if it is not

    def _use_kernel_timeouts(self, connection: AbstractConnection) -> None:
        """After each (re)connect: the same timeout, kept by the kernel, not by poll()."""
        sock = getattr(connection, "_sock", None)  # redis-py has no public accessor
        timeout = getattr(connection, "socket_timeout", None)
        if not isinstance(sock, socket.socket) or not timeout:
            return  # no timeout asked for: blocking already, nothing to bound
        seconds = int(timeout)
        timeval = struct.pack("ll", seconds, int((timeout - seconds) * 1_000_000))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
        sock.settimeout(None)  # blocking: no poll() before each call


#: What a blocking call that reached SO_RCVTIMEO/SO_SNDTIMEO raises (EAGAIN; over
#: TLS, the ssl module's "want" errors), and Python's own timeout.
_TIMEOUTS = (TimeoutError, BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


def _timed_out(exc: BaseException) -> bool:
    """A timeout, whether Python's or the kernel's (redis-py reports the
    kernel's as a ConnectionError raised while handling one of `_TIMEOUTS`)."""
    cause = exc.__cause__ or exc.__context__
    return isinstance(exc, (RedisTimeoutError, *_TIMEOUTS)) or isinstance(cause, _TIMEOUTS)
