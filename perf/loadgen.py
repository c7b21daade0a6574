"""A small closed-loop HTTP/1.1 load generator for loopback benchmarks.

Why not ``wrk``: it is usually not installed here, and the benchmark must run
anywhere the venv runs. Why not ``httpx``/threads: on a 2-core machine the
load generator competes with the server for CPU, so it must be cheap per
request. Each client process runs one ``selectors`` loop over ``connections``
non-blocking sockets; every connection sends one pre-built request (raw bytes),
reads the whole response (``Content-Length`` or close-delimited), records the
status and the latency, then sends the next request. Keep-alive is used when
the server offers it; gunicorn's sync workers answer ``Connection: close``, so
then every request pays a new TCP connection, and its connect time is part of
its latency, for the baseline and the real app alike.

Every loop is bounded: no request is sent after ``duration`` seconds or once
the pre-built requests run out, in-flight requests get ``grace`` more seconds,
and one request may take at most ``request_timeout`` seconds.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import selectors
import socket
import time
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["LoadResult", "build_request", "percentile", "run_load"]


def build_request(host: str, port: int, path: str, headers: dict[str, str], body: bytes) -> bytes:
    """The exact bytes of one ``POST path`` with ``body`` (HTTP/1.1, keep-alive)."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (nan when empty)."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


@dataclass
class LoadResult:
    completed: int = 0  # responses read in full, whatever their status
    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)  # connect/reset/timeout/unfinished...
    latencies: list[float] = field(default_factory=list)  # seconds, sorted
    started: float = 0.0  # time.monotonic() (system-wide clock, comparable across processes)
    finished: float = 0.0
    client_cpu_seconds: float = 0.0
    exhausted: bool = False  # ran out of pre-built requests before `duration`

    @property
    def elapsed(self) -> float:
        return max(self.finished - self.started, 1e-9)

    @property
    def rate(self) -> float:
        return self.completed / self.elapsed

    def p(self, fraction: float) -> float:
        return percentile(self.latencies, fraction)


class _Slot:
    __slots__ = (
        "body_start",
        "close_after",
        "connecting",
        "inbuf",
        "length",
        "out",
        "served",
        "sock",
        "t0",
    )

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.connecting = False
        self.out = memoryview(b"")
        self.inbuf = bytearray()
        self.t0 = 0.0
        self.body_start = -1  # index past the header block, once parsed
        self.length = -1  # Content-Length; -1: read until the server closes
        self.close_after = False
        self.served = 0  # responses read on the current connection


def _drive(
    address: tuple[str, int],
    requests: Sequence[bytes],
    connections: int,
    duration: float,
    request_timeout: float,
    grace: float,
    per_connection: int | None,
) -> dict:
    """One client process's loop. Returns plain data (it crosses a pipe)."""
    sel = selectors.DefaultSelector()
    statuses: Counter = Counter()
    errors: Counter = Counter()
    latencies = array("d")
    next_index = 0
    cpu_before = os.times()
    started = time.monotonic()
    stop_sending = started + duration
    hard_stop = stop_sending + grace
    slots = [_Slot() for _ in range(max(1, connections))]
    busy: set[_Slot] = set()

    def drop(slot: _Slot) -> None:
        if slot.sock is not None:
            sel.unregister(slot.sock)
            slot.sock.close()
            slot.sock = None
            slot.served = 0

    def begin(slot: _Slot) -> None:
        nonlocal next_index
        busy.discard(slot)
        # Bounded: each pass through this loop consumes one pre-built request.
        while next_index < len(requests) and time.monotonic() < stop_sending:
            request = requests[next_index]
            next_index += 1
            slot.out = memoryview(request)
            slot.inbuf = bytearray()
            slot.body_start = -1
            slot.length = -1
            slot.close_after = False
            slot.t0 = time.monotonic()
            if slot.sock is None:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                err = sock.connect_ex(address)
                if err not in (0, errno.EINPROGRESS):
                    sock.close()
                    errors[f"connect:{errno.errorcode.get(err, err)}"] += 1
                    continue
                slot.sock, slot.connecting = sock, True
                sel.register(sock, selectors.EVENT_WRITE, slot)
            else:
                sel.modify(slot.sock, selectors.EVENT_WRITE, slot)
            busy.add(slot)
            return
        drop(slot)

    def fail(slot: _Slot, kind: str) -> None:
        errors[kind] += 1
        drop(slot)
        begin(slot)

    def complete(slot: _Slot, status: int) -> None:
        latencies.append(time.monotonic() - slot.t0)
        statuses[status] += 1
        slot.served += 1
        if slot.close_after or (per_connection is not None and slot.served >= per_connection):
            drop(slot)
        begin(slot)

    def parse_head(slot: _Slot) -> bool:
        end = slot.inbuf.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(slot.inbuf[:end]).lower()
        slot.body_start = end + 4
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name == b"content-length":
                slot.length = int(value)
            elif name == b"connection" and b"close" in value:
                slot.close_after = True
        if head.startswith(b"http/1.0"):
            slot.close_after = True
        return True

    def status_of(slot: _Slot) -> int:
        return int(slot.inbuf[9:12])

    for slot in slots:
        begin(slot)

    # Bounded by hard_stop: stops even if the server never answers.
    while busy:
        now = time.monotonic()
        if now > hard_stop:
            errors["unfinished_at_deadline"] += len(busy)
            for slot in list(busy):
                drop(slot)
            break
        for key, _mask in sel.select(timeout=0.2):
            slot = key.data
            sock = slot.sock
            if sock is None:
                continue
            if slot.connecting:
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    fail(slot, f"connect:{errno.errorcode.get(err, err)}")
                    continue
                slot.connecting = False
            try:
                if slot.out:
                    sent = sock.send(slot.out)
                    slot.out = slot.out[sent:]
                    if not slot.out:
                        sel.modify(sock, selectors.EVENT_READ, slot)
                    continue
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:
                fail(slot, f"socket:{errno.errorcode.get(exc.errno or 0, exc.errno)}")
                continue
            if not data:  # the server closed the connection
                if slot.body_start >= 0 and slot.length < 0:
                    slot.close_after = True
                    complete(slot, status_of(slot))  # close-delimited body
                else:
                    fail(slot, "closed_before_response")
                continue
            slot.inbuf += data
            if slot.body_start < 0 and not parse_head(slot):
                continue
            if slot.length >= 0 and len(slot.inbuf) >= slot.body_start + slot.length:
                complete(slot, status_of(slot))
        now = time.monotonic()
        for slot in [s for s in busy if now - s.t0 > request_timeout]:
            fail(slot, "timeout")
    finished = time.monotonic()
    cpu_after = os.times()
    sel.close()
    return {
        "statuses": statuses,
        "errors": errors,
        "latencies": latencies.tobytes(),
        "started": started,
        "finished": finished,
        "cpu": (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system),
        "exhausted": next_index >= len(requests) and finished - started < duration,
    }


def _client_main(
    conn, start, address, requests, connections, duration, timeout, grace, per_connection
) -> None:
    conn.send("ready")
    if not start.wait(30):
        conn.send({"error": "never told to start"})
        return
    try:
        conn.send(_drive(address, requests, connections, duration, timeout, grace, per_connection))
    except BaseException as exc:  # report, do not hang the parent
        conn.send({"error": repr(exc)})


def run_load(
    host: str,
    port: int,
    requests: Sequence[bytes],
    *,
    connections: int = 8,
    processes: int = 1,
    duration: float = 8.0,
    request_timeout: float = 10.0,
    grace: float = 10.0,
    requests_per_connection: int | None = None,
) -> LoadResult:
    """Send ``requests`` (each at most once, in order) to ``host:port`` from
    ``processes`` forked client processes with ``connections`` connections in
    all, for at most ``duration`` seconds. Returns the merged result.

    ``requests_per_connection``: close each connection after that many
    responses and open a new one (None: keep it as long as the server does)."""
    ctx = multiprocessing.get_context("fork")  # children share the request list
    processes = max(1, min(processes, connections))
    start = ctx.Event()
    children = []
    for index in range(processes):
        parent_end, child_end = ctx.Pipe()
        share = connections // processes + (1 if index < connections % processes else 0)
        proc = ctx.Process(
            target=_client_main,
            args=(
                child_end,
                start,
                (host, port),
                requests[index::processes],
                share,
                duration,
                request_timeout,
                grace,
                requests_per_connection,
            ),
            daemon=True,
        )
        proc.start()
        children.append((proc, parent_end))
    try:
        for proc, pipe in children:
            if not pipe.poll(30) or pipe.recv() != "ready":
                raise RuntimeError(f"load client pid {proc.pid} did not start")
        start.set()
        parts = []
        limit = time.monotonic() + duration + grace + request_timeout + 30
        for proc, pipe in children:
            if not pipe.poll(max(0.0, limit - time.monotonic())):
                raise RuntimeError(f"load client pid {proc.pid} did not report in time")
            part = pipe.recv()
            if "error" in part:
                raise RuntimeError(f"load client pid {proc.pid} failed: {part['error']}")
            parts.append(part)
    finally:
        for proc, _pipe in children:
            proc.join(5)
            if proc.is_alive():
                proc.kill()  # only our own child, by its handle
                proc.join(5)
    result = LoadResult(
        started=min(p["started"] for p in parts), finished=max(p["finished"] for p in parts)
    )
    merged = array("d")
    for part in parts:
        result.statuses.update(part["statuses"])
        result.errors.update(part["errors"])
        result.client_cpu_seconds += part["cpu"]
        result.exhausted |= part["exhausted"]
        merged.frombytes(part["latencies"])
    result.latencies = sorted(merged)
    result.completed = len(result.latencies)
    return result
