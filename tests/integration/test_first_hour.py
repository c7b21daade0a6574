"""The first hour of a new user (issue 13): the dev stack, its supervisor,
the CLI from a second terminal, the demo, and configuration problems at
start, each through real processes.

The run-stack test takes about 30 s: it starts scripts/run-stack (Redis and
the Procfile's four processes) in a temp var/ dir, runs the demo and
scripts/flask against it, kills the worker with SIGKILL and checks that the
supervisor starts it again and leaves the other processes alone.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from devtools.stack import CONFIG_VARIABLES
from devtools.supervisor import Supervisor
from tests.support.processes import (
    REPO_ROOT,
    TEST_API_TOKEN,
    TEST_WEBHOOK_SECRET,
    free_port,
    port_is_free,
)

PYTHON = sys.executable


def clean_env(**overrides: str) -> dict[str, str]:
    """os.environ without any app configuration from the developer's shell."""
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_VARIABLES}
    env.pop("FLASK_APP", None)
    env.update(overrides)
    return env


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


# -- the supervisor ------------------------------------------------------------------


class Output(io.StringIO):
    """A thread-safe enough sink for the supervisor's lines."""

    def text(self) -> str:
        return self.getvalue()


def sleeper(name: str) -> str:
    return f"{PYTHON} -c 'import time; print(\"{name} up\", flush=True); time.sleep(600)'"


def run_supervisor(supervisor: Supervisor) -> threading.Thread:
    thread = threading.Thread(target=supervisor.run, kwargs={"handle_signals": False})
    thread.start()
    return thread


def test_a_killed_process_is_restarted_and_the_others_are_untouched():
    out = Output()
    supervisor = Supervisor(
        {"a": sleeper("a"), "b": sleeper("b")}, clean_env(), backoff=0.2, out=out
    )
    thread = run_supervisor(supervisor)
    try:
        a, b = supervisor.children["a"], supervisor.children["b"]
        wait_for(lambda: "a up" in out.text() and "b up" in out.text(), 10, "both processes")
        first_a, first_b = a.pid, b.pid
        os.kill(first_a, signal.SIGKILL)
        wait_for(lambda: out.text().count("a up") == 2, 10, "a restarted")
        assert a.pid != first_a and a.running()
        assert b.pid == first_b and b.running()
        text = out.text()
        assert f"a (pid {first_a}) killed by signal SIGKILL (9)" in text
        assert "restarting a in 0.2 s" in text
        assert text.count("b up") == 1
    finally:
        supervisor.stop()
        thread.join(30)
    assert not a.running() and not b.running()


def test_a_process_that_keeps_failing_is_given_up_with_its_exit_code_and_stderr():
    out = Output()
    failing = f"{PYTHON} -c 'import sys; sys.stderr.write(\"boom: bad thing\\n\"); sys.exit(3)'"
    supervisor = Supervisor(
        {"bad": failing, "good": sleeper("good")},
        clean_env(),
        max_restarts=2,
        window=60,
        backoff=0.05,
        out=out,
    )
    thread = run_supervisor(supervisor)
    try:
        bad, good = supervisor.children["bad"], supervisor.children["good"]
        wait_for(lambda: bad.gave_up, 20, "the supervisor to give up on 'bad'")
        text = out.text()
        assert text.count("exited with code 3") == 3  # the first run and two restarts
        assert "bad's last stderr lines:" in text and "boom: bad thing" in text
        assert "bad exited 3 times within 60 s: not restarting it" in text
        assert good.running() and text.count("good up") == 1
    finally:
        supervisor.stop()
        thread.join(30)


def test_a_port_left_in_time_wait_counts_as_free():
    """A server that just stopped leaves its connections in TIME_WAIT; the
    next redis-server binds with SO_REUSEADDR, so run-stack must not move it."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as redis-server does
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]
    server.listen()
    assert not port_is_free(port)  # something listens: taken
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()  # the server side closes first: its socket goes to TIME_WAIT
    time.sleep(0.1)
    client.close()
    server.close()
    plain = socket.socket()
    with pytest.raises(OSError):  # the old check's bind, without SO_REUSEADDR
        plain.bind(("127.0.0.1", port))
    plain.close()
    assert port_is_free(port)


# -- configuration problems at start ----------------------------------------------------


GUNICORN = [PYTHON, "-m", "gunicorn", "--config", "python:app.gunicorn_conf", "--bind"]
BAD_SECRET = clean_env(
    REDIS_URL="redis://127.0.0.1:9/0", API_TOKEN="t", CODAT_WEBHOOK_SECRETS="whsec_!!!"
)


@pytest.mark.parametrize(
    ("argv", "program"),
    [
        ([PYTHON, "-m", "workers"], "worker"),
        ([PYTHON, "-m", "workers.clock"], "clock"),
        ([*GUNICORN, "127.0.0.1:0", "app:create_app()"], "web"),
    ],
)
def test_a_process_with_a_bad_value_prints_one_line_and_no_traceback(argv, program):
    result = subprocess.run(
        argv, env=BAD_SECRET, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"{program}: CODAT_WEBHOOK_SECRETS: entry 1 ('whsec_!!!') is not valid base64"
    ]
    assert result.stdout == ""


def run_stack(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "scripts/run-stack"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_run_stack_checks_the_configuration_before_starting_anything(tmp_path):
    env = clean_env(DEVTOOLS_VAR_DIR=str(tmp_path), CODAT_WEBHOOK_SECRETS="", LOG_LEVEL="loud")
    result = run_stack(env)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("run-stack: CODAT_WEBHOOK_SECRETS: not set")
    assert lines[0].endswith("(from environment)")  # it wins over var/dev.env's
    assert lines[1].startswith("run-stack: LOG_LEVEL: must be one of CRITICAL, ERROR")

    result = run_stack({**env, "CODAT_WEBHOOK_SECRETS": "whsec_!!!", "LOG_LEVEL": "INFO"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "run-stack: CODAT_WEBHOOK_SECRETS: entry 1 ('whsec_!!!') is not valid base64"
        "  (from environment)"
    ]
    assert not (tmp_path / "redis").exists()  # nothing was started
    assert not (tmp_path / "stack.env").exists()


# -- the CLI and the demo without a stack ------------------------------------------------


def test_flask_help_without_configuration_has_no_traceback():
    result = subprocess.run(
        [str(Path(PYTHON).with_name("flask")), "--app", "app", "--help"],
        env=clean_env(),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert "Traceback" not in result.stdout + result.stderr
    assert "deliveries" in result.stdout and "companies" in result.stdout


def test_scripts_flask_without_a_running_stack_says_so(tmp_path):
    def flask(var: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "scripts/flask", "deliveries", "list-dead"],
            env=clean_env(DEVTOOLS_VAR_DIR=str(var)),
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    never = flask(tmp_path / "never")
    assert never.returncode == 2 and "Traceback" not in never.stderr
    lines = never.stderr.splitlines()
    assert lines[0].startswith("scripts/flask: no ") and "is the dev stack running?" in lines[0]
    assert [line.split(":")[1].strip() for line in lines[1:]] == [
        "REDIS_URL",
        "API_TOKEN",
        "CODAT_WEBHOOK_SECRETS",
    ]

    stale = tmp_path / "stale"
    stale.mkdir()
    dead_pid = 2**22 + 1  # above Linux's largest possible pid_max: never a live process
    (stale / "stack.env").write_text(
        f"# run-stack pid {dead_pid}\nREDIS_URL=redis://127.0.0.1:{free_port()}/0\n"
        f"API_TOKEN=t\nCODAT_WEBHOOK_SECRETS={TEST_WEBHOOK_SECRET}\n"
    )
    left = flask(stale)
    assert left.returncode == 1 and "Traceback" not in left.stderr
    assert "is left from a run-stack that is not running any more" in left.stderr
    assert "Error: Redis cannot be reached" in left.stderr


def demo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "devtools.demo", *args],
        env=env or clean_env(CODAT_WEBHOOK_SECRETS=TEST_WEBHOOK_SECRET, API_TOKEN=TEST_API_TOKEN),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_demo_gives_plain_errors_and_a_full_help():
    help_text = demo("--help").stdout
    assert "Exit status: 0 when the company reached the expected state" in help_text
    assert "happy_path" in help_text and "revoked_after_ready" in help_text

    unknown = demo("--lifecycle", "nope")
    assert unknown.returncode == 2
    assert "invalid choice: 'nope'" in unknown.stderr and "Traceback" not in unknown.stderr

    down = demo("--base-url", f"http://127.0.0.1:{free_port()}")
    assert down.returncode == 1
    assert "Traceback" not in down.stderr
    assert down.stderr.strip().splitlines()[-1].startswith("demo: nothing answers at http://")


# -- the dev stack ----------------------------------------------------------------------


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a listening TCP socket on ``port`` (/proc/net/tcp)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            for line in fh.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.rsplit(":", 1)
                if state == "0A" and int(hex_port, 16) == port:
                    found.add(address)
    return found


def pids(log: Path) -> dict[str, list[int]]:
    started: dict[str, list[int]] = {}
    for name, pid in re.findall(r"\| (\w+) started \(pid (\d+)\)", log.read_text()):
        started.setdefault(name, []).append(int(pid))
    return started


def without_node(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """An environment whose `node` and `npm` only leave a mark: run-stack, the
    demo and scripts/flask must not need Node (only the contract tests do)."""
    fake = tmp_path / "fake-bin"
    if not fake.exists():
        fake.mkdir()
        for tool in ("node", "npm", "npx"):
            mark = f"echo {tool} >> {tmp_path}/node-was-called"
            (fake / tool).write_text(f"#!/bin/sh\n{mark}\nexit 99\n")
            (fake / tool).chmod(0o755)
    return clean_env(PATH=f"{fake}{os.pathsep}{os.environ['PATH']}", **overrides)


#: A line of a process's output, or of its stderr quoted by the supervisor.
PROCESS_LINE = re.compile(r"^\d\d:\d\d:\d\d ((?!run-stack )\S+\s+\| |run-stack \|     )")


@dataclass
class DevStack:
    var: Path
    port: int
    redis_port: int
    log: Path
    process: subprocess.Popen[bytes]
    tmp_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def text(self) -> str:
        return self.log.read_text()

    def second_terminal(self) -> dict[str, str]:
        """Another shell: only the repository (its var/) in common with run-stack."""
        return without_node(self.tmp_path, DEVTOOLS_VAR_DIR=str(self.var))

    def flask(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "scripts/flask", *args],
            env=self.second_terminal(),
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def setting(self, name: str) -> str:
        for line in (self.var / "stack.env").read_text().splitlines():
            if line.startswith(f"{name}="):
                return line.partition("=")[2]
        raise KeyError(name)


@contextlib.contextmanager
def dev_stack(tmp_path: Path, **env: str) -> Iterator[DevStack]:
    """scripts/run-stack in a temp var/, on free ports; stopped with Ctrl-C
    (SIGINT) at the end, which must exit 0 without a traceback."""
    var, port, redis_port = tmp_path / "var", free_port(), free_port()
    log = tmp_path / "run-stack.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            ["bash", "scripts/run-stack", "--redis-port", str(redis_port)],
            env=without_node(tmp_path, DEVTOOLS_VAR_DIR=str(var), PORT=str(port), **env),
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stack = DevStack(var, port, redis_port, log, process, tmp_path)
    try:
        wait_for(lambda: "Listening at: http://127.0.0.1" in stack.text(), 60, "gunicorn")
        wait_for(lambda: "Listening on authflow..." in stack.text(), 30, "the worker")
        yield stack
    finally:
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
    assert code == 0, stack.text()[-3000:]
    assert not (var / "stack.env").exists()
    # run-stack's own lines (not its processes', which a test may crash on purpose)
    own = [line for line in stack.text().splitlines() if not PROCESS_LINE.match(line)]
    assert not [line for line in own if "Traceback" in line], stack.text()[-3000:]
    assert not (tmp_path / "node-was-called").exists()


def test_run_stack_supervises_and_the_cli_and_demo_reach_it(tmp_path):
    with dev_stack(tmp_path) as stack:
        log = stack.log
        # development binds loopback only
        assert listening_addresses(stack.port) == {"0100007F"}
        assert f"redis://127.0.0.1:{stack.redis_port}/0" in stack.setting("REDIS_URL")

        # the demo and the CLI from "another terminal": only DEVTOOLS_VAR_DIR in common
        ran = demo(env=stack.second_terminal())
        assert ran.returncode == 0, ran.stdout + ran.stderr
        company_id = re.search(r"company (\S+) is ready", ran.stdout).group(1)
        shown = stack.flask("companies", "show", company_id)
        assert shown.returncode == 0, shown.stderr
        assert "state     ready" in shown.stdout

        # a worker killed with SIGKILL is started again; nothing else moves
        before = pids(log)
        assert sorted(before) == ["clock", "delivery", "web", "worker"]
        os.kill(before["worker"][0], signal.SIGKILL)
        wait_for(lambda: len(pids(log)["worker"]) == 2, 30, "the worker's restart")
        wait_for(lambda: stack.text().count("Listening on authflow...") == 2, 30, "it to listen")
        text = stack.text()
        assert f"worker (pid {before['worker'][0]}) killed by signal SIGKILL (9)" in text
        after = pids(log)
        for name in ("web", "delivery", "clock"):
            assert after[name] == before[name]
            os.kill(after[name][0], 0)  # still alive
        assert stack.process.poll() is None

        # the Redis run-stack started comes back on its port after a crash
        redis_pid = int(re.search(r"run-stack: \S+ pid (\d+) on redis://", text).group(1))
        os.kill(redis_pid, signal.SIGKILL)
        again = rf"redis started again \(pid \d+\) on redis://127\.0\.0\.1:{stack.redis_port}/0"
        wait_for(lambda: re.search(again, stack.text()), 30, "Redis to be started again")
        assert stack.process.poll() is None

        # RQ's own per-job lines are DEBUG now; ours remain
        assert "Successfully completed" not in text and "Job OK" not in text
        assert "function=workers.jobs.drain_inbox" in text


class Receiver:
    """python -m devtools.receiver, as docs/host-quickstart.md runs it."""

    def __init__(self, tmp_path: Path, port: int, secret: str, *args: str):
        self.output = tmp_path / f"receiver-{time.monotonic_ns()}.log"
        with self.output.open("w") as out:
            self.process = subprocess.Popen(
                [PYTHON, "-m", "devtools.receiver", "--port", str(port), "--secret", secret, *args],
                cwd=REPO_ROOT,
                env=clean_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_for(lambda: "receiver: http://" in self.output.read_text(), 20, "the receiver")

    def lines(self, prefix: str) -> list[str]:
        return [line for line in self.output.read_text().splitlines() if line.startswith(prefix)]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def test_the_host_quickstart_as_written(tmp_path):
    """docs/host-quickstart.md: subscribe a local receiver, verify a
    notification, a dead letter with a short retry schedule, a replay."""
    schedule = {
        "ALLOW_PRIVATE_SUBSCRIBER_URLS": "1",
        "DELIVERY_RETRY_SCHEDULE": "0,2,5",
        "DELIVERY_BREAKER_FAILURES": "20",
    }
    with dev_stack(tmp_path, **schedule) as stack:
        token = stack.setting("API_TOKEN")
        auth = {"Authorization": f"Bearer {token}"}
        hook_port = free_port()
        created = httpx.post(
            stack.url + "/api/subscriptions",
            headers=auth,
            json={"url": f"http://127.0.0.1:{hook_port}/hooks", "eventTypes": ["*"]},
        )
        assert created.status_code == 201, created.text
        sub, secret = created.json()["id"], created.json()["secret"]

        receiver = Receiver(tmp_path, hook_port, secret)
        assert demo(env=stack.second_terminal()).returncode == 0
        wait_for(lambda: len(receiver.lines("204 ")) == 5, 30, "5 verified notifications")
        assert len(receiver.lines("204 company.ready ")) == 1
        receiver.stop()

        failing = Receiver(tmp_path, hook_port, secret, "--fail")
        assert demo(env=stack.second_terminal()).returncode == 0

        def dead() -> bool:
            listed = httpx.get(f"{stack.url}/api/subscriptions/{sub}/deliveries", headers=auth)
            return [d["status"] for d in listed.json()["deliveries"]].count("dead") == 5

        wait_for(dead, 40, "5 dead letters", interval=0.5)
        listed = stack.flask("deliveries", "list-dead").stdout
        assert "5 dead-lettered deliveries" in listed
        assert listed.count("attempts=3 last_error=HTTP 500") == 5
        # 5 notifications x 3 attempts (the receiver writes its line after answering)
        wait_for(lambda: len(failing.lines("500 (--fail) ")) >= 15, 10, "15 failed attempts")
        assert len(failing.lines("500 (--fail) ")) == 15
        failed_ids = {line.split()[-1] for line in failing.lines("500 (--fail) ")}
        metrics = httpx.get(stack.url + "/metrics", headers=auth).text
        assert "authflow_delivery_dead_letters 5.0" in metrics
        failing.stop()

        receiver = Receiver(tmp_path, hook_port, secret)
        replayed = stack.flask("deliveries", "replay", "--subscription", sub)
        assert "replayed 5 deliveries" in replayed.stdout, replayed.stdout + replayed.stderr
        wait_for(lambda: len(receiver.lines("204 ")) == 5, 30, "the 5 replayed notifications")
        replayed_ids = {line.split()[2].removeprefix("id=") for line in receiver.lines("204 ")}
        assert replayed_ids == failed_ids  # the same notification ids: deduplicable
        assert "0 dead-lettered deliveries" in stack.flask("deliveries", "list-dead").stdout
        receiver.stop()
        assert "Traceback" not in stack.text()
