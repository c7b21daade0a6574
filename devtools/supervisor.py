"""A small process supervisor for the dev stack (``scripts/run-stack``).

It runs named shell commands (a Procfile's entries), prefixes every line
they write with the time and the process name, and when one exits:

- prints why: its exit code, or the signal that killed it, and its last
  stderr lines;
- starts it again after a backoff (1 s, 2 s, 4 s ... at most 30 s), so a
  process that crashes at start does not spin;
- gives up on that process (and says so) after ``max_restarts`` restarts
  within ``window`` seconds. The other processes are never touched: one
  process dying does not take the stack down, unlike honcho, which stopped
  everything when any process exited.

Stop signals (SIGINT, SIGTERM, SIGHUP) stop every process: SIGTERM, then
SIGKILL to its whole process group after ``stop_timeout`` seconds. Each
process runs in its own session (a terminal's Ctrl-C reaches only us) and
gets SIGTERM from the kernel if the supervisor dies (Linux).
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO

from tests.support.processes import kill_with_parent

STDERR_TAIL_LINES = 10


def describe_exit(returncode: int) -> str:
    """``exited with code 1`` or ``killed by signal SIGKILL (9)``."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "signal"
        return f"killed by signal {name} ({-returncode})"
    return f"exited with code {returncode}"


@dataclass
class Child:
    name: str
    command: str
    popen: subprocess.Popen[bytes] | None = None
    readers: list[threading.Thread] = field(default_factory=list)
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=STDERR_TAIL_LINES))
    restarts: deque[float] = field(default_factory=deque)  # monotonic times, within the window
    restart_at: float | None = None
    gave_up: bool = False

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


def _signal_group(pid: int, sig: int) -> None:
    """Signal the process group ``pid`` leads (its own session), if any is left."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class Supervisor:
    def __init__(
        self,
        commands: Mapping[str, str],
        env: Mapping[str, str],
        *,
        cwd: str | os.PathLike[str] | None = None,
        max_restarts: int = 5,
        window: float = 60.0,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        stop_timeout: float = 10.0,
        out: IO[str] | None = None,
        watchers: list[Callable[[], None]] | None = None,
    ):
        self.children = {name: Child(name, command) for name, command in commands.items()}
        self.env = dict(env)
        self.cwd = cwd
        self.max_restarts = max_restarts
        self.window = window
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.stop_timeout = stop_timeout
        self.out = out or sys.stdout
        self.watchers = list(watchers or [])  # called every loop turn (e.g. the dev Redis)
        self._lines: queue.Queue[tuple[str, str]] = queue.Queue()
        self._stop = threading.Event()
        self._hurry = threading.Event()  # a second stop signal: no more waiting
        self._width = max([len(n) for n in self.children] + [len("run-stack")])

    # -- output -------------------------------------------------------------

    def say(self, text: str, name: str = "run-stack") -> None:
        """Print a line with the time and a name, as the processes' lines are."""
        for line in text.splitlines() or [""]:
            print(f"{time.strftime('%H:%M:%S')} {name:<{self._width}} | {line}", file=self.out)
        self.out.flush()

    def _read(self, child: Child, stream: IO[bytes], is_stderr: bool) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            if is_stderr:
                child.stderr_tail.append(line)
            self._lines.put((child.name, line))
        stream.close()

    def _flush_lines(self, timeout: float) -> None:
        try:
            name, line = self._lines.get(timeout=timeout)
        except queue.Empty:
            return
        self.say(line, name)
        while True:
            try:
                name, line = self._lines.get_nowait()
            except queue.Empty:
                return
            self.say(line, name)

    # -- processes ----------------------------------------------------------

    def start(self, child: Child) -> None:
        child.popen = subprocess.Popen(
            ["/bin/sh", "-c", f"exec {child.command}"],
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # own group: its children are stopped with it
            preexec_fn=kill_with_parent(signal.SIGTERM),
        )
        child.stderr_tail.clear()
        child.readers = [
            threading.Thread(target=self._read, args=(child, stream, is_err), daemon=True)
            for stream, is_err in ((child.popen.stdout, False), (child.popen.stderr, True))
        ]
        for reader in child.readers:
            reader.start()
        self.say(f"{child.name} started (pid {child.pid})")

    def _exited(self, child: Child, now: float) -> None:
        assert child.popen is not None
        returncode = child.popen.returncode
        # What it left behind (RQ's scheduler, gunicorn's workers) holds its
        # pipes open: stop it first, then read its last lines before quoting them.
        _signal_group(child.popen.pid, signal.SIGTERM)
        for reader in child.readers:
            reader.join(timeout=1.0)
        self._flush_lines(0)
        self.say(f"{child.name} (pid {child.pid}) {describe_exit(returncode)}")
        if child.stderr_tail:
            self.say(f"{child.name}'s last stderr lines:")
            for line in child.stderr_tail:
                self.say(f"    {line}")
        while child.restarts and now - child.restarts[0] > self.window:
            child.restarts.popleft()
        if len(child.restarts) >= self.max_restarts:
            child.gave_up = True
            self.say(
                f"{child.name} exited {len(child.restarts) + 1} times within "
                f"{self.window:.0f} s: not restarting it. The other processes keep running; "
                "fix the cause, then restart run-stack."
            )
            return
        delay = min(self.backoff * 2 ** len(child.restarts), self.max_backoff)
        child.restart_at = now + delay
        self.say(f"restarting {child.name} in {delay:g} s")

    def _restart_due(self, child: Child, now: float) -> None:
        assert child.popen is not None and child.restart_at is not None
        _signal_group(child.popen.pid, signal.SIGKILL)  # nothing of the old one survives
        child.restart_at = None
        child.restarts.append(now)
        self.start(child)

    def _tick(self) -> None:
        now = time.monotonic()
        for child in self.children.values():
            if child.gave_up or child.popen is None:
                continue
            if child.restart_at is not None:
                if now >= child.restart_at:
                    self._restart_due(child, now)
            elif child.popen.poll() is not None:
                self._exited(child, now)
        for watch in self.watchers:
            watch()

    def alive(self) -> bool:
        """Whether any process runs or waits for its restart."""
        return any(not c.gave_up for c in self.children.values())

    # -- running ------------------------------------------------------------

    def stop(self) -> None:
        """Ask `run` to stop every process and return (any thread, or a signal)."""
        self._stop.set()

    def run(self, *, handle_signals: bool = True) -> int:
        """Start every process and supervise them until `stop` or a stop signal.
        Returns 0 when stopped, 1 if every process was given up on."""
        previous = {}
        if handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                previous[sig] = signal.signal(sig, self._on_signal)
        try:
            for child in self.children.values():
                self.start(child)
            while not self._stop.is_set():
                self._flush_lines(0.2)
                self._tick()
                if not self.alive():
                    self.say("every process was given up on; stopping")
                    return 1
            return 0
        finally:
            self._shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self._stop.is_set():
            self._hurry.set()
        self._stop.set()

    def _shutdown(self) -> None:
        running = [c for c in self.children.values() if c.running()]
        for child in running:
            self.say(f"stopping {child.name} (pid {child.pid})")
            assert child.popen is not None
            child.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        while (
            any(c.running() for c in running)
            and time.monotonic() < deadline
            and not self._hurry.is_set()
        ):
            self._flush_lines(0.1)
        for child in self.children.values():
            if child.popen is None:
                continue
            _signal_group(child.popen.pid, signal.SIGKILL)
            child.popen.wait()
            for reader in child.readers:
                reader.join(timeout=1.0)
        self._flush_lines(0)
        for child in running:
            assert child.popen is not None
            self.say(f"{child.name} stopped ({describe_exit(child.popen.returncode)})")
