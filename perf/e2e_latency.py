"""End-to-end latency: a Codat webhook accepted -> `company.ready` received by a subscriber.

Target (issue 3): at a steady 200 webhooks/s, from the 2xx of the webhook that
completes a company's readiness to a local subscriber's receipt of that
company's `company.ready`: p50 <= 50 ms and p99 <= 250 ms.

Run from the repository root::

    python -m perf.e2e_latency                  # ~45 s: 3 s warm-up + 25 s steady
    python -m perf.e2e_latency --duration 10 --rate 100
    python -m perf.e2e_latency --gap 2          # a company's events 2 s apart
    python -m perf.e2e_latency --delivery-workers 2 --dump /tmp/e2e.jsonl

The stack (real processes, configured like tests/conftest.py's ``stack_env``
plus ``ALLOW_PRIVATE_SUBSCRIBER_URLS=1``): a private Redis (never the shared
6379), gunicorn with 2 workers (``tests.support.processes.start_gunicorn``, the
Procfile's options) and 2 ``python -m workers`` processes (both queues,
webhooks first), at ``LOG_LEVEL`` INFO (production's). No clock process: it
only sweeps every 10 s, and nothing here waits for it. A
``tests.support.subscriber.Subscriber`` (verifies every request with the
``standardwebhooks`` library) runs in this process and is subscribed through
the real API, ``POST /api/subscriptions`` with ``eventTypes
["company.ready"]``.

Load, open loop: ``happy_path`` lifecycles (5 events: company.created,
connection.created, connection.connected, read.completed,
read.completed.initial; Codat's own example bodies, fresh ids), a new company
every ``5 / --rate`` s, its events ``--gap`` s apart, so ``--rate`` webhooks/s
in steady state. Every request is pre-built and signed (``svix``) just before
the run, and sent at its scheduled time on a new connection from a separate
sender process (``selectors``, one loop), whether or not earlier requests
have been answered. The sender records, with ``time.time()``, when it started
each request and when it had read the whole answer; the subscriber records
``time.time()`` at receipt (same machine, same clock).

Measured per company: from the latest 2xx among its 5 webhooks (the one that
completes its readiness, normally read.completed.initial) to the subscriber's
first receipt of its `company.ready`. Companies whose last webhook was
accepted in the first ``--warmup`` seconds are left out of the percentiles
(not of the checks).

Baseline, same run, interleaved in time: the two HTTP hops the path cannot
avoid. (1) the webhook POST itself (sender: request start -> 2xx read) of the
completing webhooks; (2) a direct POST to the subscriber: the sender also
sends ``--probe-rate`` signed Standard Webhooks requests per second straight
to the subscriber (type ``bench.probe``, the subscription's secret), measured
from request start to the subscriber's receipt timestamp, exactly like the
last hop of the real path. The "floor" is (1) + (2); the ratio end-to-end /
floor is what the pipeline (inbox, drain, outbox, relay, deliver job) adds.

Where the time goes, per company, from stored timestamps (Redis):
``accept -> commit`` (the ``company.ready`` envelope's ``timestamp``, taken by
``CompanyUpdates.apply`` just before its MULTI), ``commit -> relay`` (the
delivery's ``created_at``), ``relay -> attempt`` (the delivery's first
attempt ``at``: RQ picked up the deliver job, which read the delivery and the
subscription), ``attempt -> receipt`` (sign, POST, verify), and the
deliver job's own HTTP exchange (the attempt's ``latency_ms``: until the
subscriber's answer is read, which is how long the job holds its worker).
Around them: the drain jobs' RQ records (``result_ttl`` 60 s: pickup delay,
duration), how busy the worker processes were per job function (their one
``"event": "job"`` log line per job: count and ``duration_ms``), the RQ
delivery backlog sampled every 0.25 s, company.ready produced vs deliver jobs
completed per second, and the latency by thirds of the window (growing: no
steady state).

Experiments (not the target's configuration; the header says so):
``--subscriber-nodelay`` sets TCP_NODELAY on the subscriber's sockets.
``tests.support.subscriber`` is Python's ``http.server``, which writes the headers
and the body of its answer in two segments; on a kept-alive connection (the
deliver job's httpx client keeps it) Nagle holds the second until the client's
delayed ACK, about 40 ms later, so every delivery holds its worker ~44 ms.
``--delivery-workers N`` adds N ``python -m workers --queues deliveries``
processes (docs/operations.md's dedicated pool).

Refused (FAILED, exit status 1, no percentile reported): any webhook not
answered 202, any transport error, a probe not answered 200, a company that
did not receive exactly one `company.ready` id (or got one for a company not
sent), a subscriber verification failure, a company not stored as ``ready``,
an inbox not empty, a dead letter, a failed RQ job or a delivery not
``delivered``.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import multiprocessing
import os
import selectors
import socket
import tempfile
import time
import uuid
from array import array
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import redis as redis_lib
from rq import Queue
from rq.registry import FailedJobRegistry, FinishedJobRegistry
from rq.utils import utcparse
from standardwebhooks.webhooks import Webhook

from codat_authflow.storage.codec import decode_record
from codat_authflow.storage.deliveries import DeliveryStore, delivery_id
from codat_authflow.storage.keys import Keys
from perf.loadgen import build_request, percentile
from perf.support import (
    app_env,
    code_version,
    cpu_seconds,
    format_counts,
    machine_busy_seconds,
    median,
    own_cpu_seconds,
    run_main,
)
from perf.workers import wait_idle
from tests.support.lifecycles import build
from tests.support.processes import (
    TEST_API_TOKEN,
    TEST_WEBHOOK_SECRET,
    Process,
    start_gunicorn,
    start_redis,
    start_rq_workers,
)
from tests.support.signing import encode_body, signed_headers
from tests.support.subscriber import Subscriber

TARGET_P50 = 0.050
TARGET_P99 = 0.250
HOST = "127.0.0.1"
WEBHOOK_PATH = "/webhooks/codat"
EVENTS_PER_COMPANY = 5  # happy_path
QUEUE = "authflow"  # Settings.queue_name's default
DELIVERY_QUEUE = "authflow-deliveries"
KEYS = Keys("authflow")
STARTED = time.monotonic()
REQUEST_TIMEOUT = 10.0


# -- the plan: what to send, when ------------------------------------------------------


@dataclass
class Planned:
    offset: float  # seconds after the start
    target: int  # 0: gunicorn, 1: subscriber
    request: bytes
    company: int = -1  # index into Plan.companies; -1 for a probe
    probe_id: str = ""


@dataclass
class Plan:
    items: list[Planned]
    companies: list[str]  # company ids
    measured_from: float  # offset: companies completed before it are warm-up
    measured_until: float  # offset: the end of the steady window (later: ramp-down)


def make_plan(args: argparse.Namespace, web_port: int, sub_port: int, secret: str) -> Plan:
    company_interval = EVENTS_PER_COMPANY / args.rate
    span = args.warmup + args.duration
    count = max(1, math.ceil(span / company_interval))
    now = datetime.now(UTC)
    items: list[Planned] = []
    companies: list[str] = []
    for index in range(count):
        life, expected = build("happy_path")
        if expected != "ready" or len(life.events) != EVENTS_PER_COMPANY:
            raise RuntimeError("happy_path is no longer 5 events ending in ready")
        companies.append(life.company_id)
        start = index * company_interval
        for step, body in enumerate(life.events):
            raw = encode_body(body)
            headers = signed_headers(
                TEST_WEBHOOK_SECRET, raw, webhook_id=f"msg_{uuid.uuid4().hex}", timestamp=now
            )
            request = build_request(HOST, web_port, WEBHOOK_PATH, headers, raw)
            items.append(Planned(start + step * args.gap, 0, request, company=index))
    signer = Webhook(secret)
    for index in range(int(span * args.probe_rate)):
        probe_id = f"msg_probe_{index}"
        body = json.dumps(
            {"id": probe_id, "type": "bench.probe", "timestamp": now.isoformat(), "data": {}},
            separators=(",", ":"),
        )
        headers = {
            "Content-Type": "application/json",
            "Connection": "close",
            "webhook-id": probe_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signer.sign(probe_id, now, body),
        }
        offset = (index + 0.5) / args.probe_rate
        request = build_request(HOST, sub_port, "/hooks", headers, body.encode())
        items.append(Planned(offset, 1, request, probe_id=probe_id))
    items.sort(key=lambda item: item.offset)
    return Plan(items, companies, measured_from=args.warmup, measured_until=span)


# -- the open-loop sender (a separate process) -------------------------------------------


class _Conn:
    __slots__ = ("body_start", "inbuf", "index", "length", "out", "sock", "t0")

    def __init__(self, index: int, sock: socket.socket, request: bytes, t0: float):
        self.index = index
        self.sock = sock
        self.out = memoryview(request)
        self.inbuf = bytearray()
        self.t0 = t0
        self.body_start = -1
        self.length = -1


def _send_all(addresses: list[tuple[str, int]], plan: list[tuple[float, int, bytes]]) -> dict:
    """Send each planned request at its offset on a new connection; never
    waits for an answer before sending the next one. Bounded: the last request
    is started at its offset, and each gets at most REQUEST_TIMEOUT seconds."""
    sel = selectors.DefaultSelector()
    n = len(plan)
    sent_at = array("d", [0.0]) * n
    done_at = array("d", [0.0]) * n
    statuses = array("i", [0]) * n
    lag = array("d")
    errors: Counter = Counter()
    live: dict[int, _Conn] = {}
    cpu_before = os.times()
    start = time.monotonic()
    next_index = 0

    def close(conn: _Conn) -> None:
        sel.unregister(conn.sock)
        conn.sock.close()
        live.pop(conn.index, None)

    def finish(conn: _Conn, status: int) -> None:
        done_at[conn.index] = time.time()
        statuses[conn.index] = status
        close(conn)

    while next_index < n or live:
        now = time.monotonic()
        while next_index < n and plan[next_index][0] <= now - start:
            offset, target, request = plan[next_index]
            lag.append(now - start - offset)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sent_at[next_index] = time.time()
            err = sock.connect_ex(addresses[target])
            if err not in (0, errno.EINPROGRESS):
                sock.close()
                errors[f"connect:{errno.errorcode.get(err, err)}"] += 1
            else:
                conn = _Conn(next_index, sock, request, now)
                live[next_index] = conn
                sel.register(sock, selectors.EVENT_WRITE, conn)
            next_index += 1
        wait = plan[next_index][0] - (time.monotonic() - start) if next_index < n else 0.05
        for key, _mask in sel.select(timeout=max(0.0, min(wait, 0.05))):
            conn = key.data
            try:
                if conn.out:
                    err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise OSError(err, os.strerror(err))
                    sent = conn.sock.send(conn.out)
                    conn.out = conn.out[sent:]
                    if not conn.out:
                        sel.modify(conn.sock, selectors.EVENT_READ, conn)
                    continue
                data = conn.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:
                errors[f"socket:{errno.errorcode.get(exc.errno or 0, exc.errno)}"] += 1
                close(conn)
                continue
            if data:
                conn.inbuf += data
                if conn.body_start < 0:
                    end = conn.inbuf.find(b"\r\n\r\n")
                    if end < 0:
                        continue
                    conn.body_start = end + 4
                    for line in bytes(conn.inbuf[:end]).lower().split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name == b"content-length":
                            conn.length = int(value)
                if conn.length >= 0 and len(conn.inbuf) >= conn.body_start + conn.length:
                    finish(conn, int(conn.inbuf[9:12]))
            elif conn.body_start >= 0 and conn.length < 0:
                finish(conn, int(conn.inbuf[9:12]))  # close-delimited
            else:
                errors["closed_before_response"] += 1
                close(conn)
        now = time.monotonic()
        for conn in [c for c in live.values() if now - c.t0 > REQUEST_TIMEOUT]:
            errors["timeout"] += 1
            close(conn)
    cpu_after = os.times()
    sel.close()
    return {
        "sent_at": sent_at.tobytes(),
        "done_at": done_at.tobytes(),
        "statuses": statuses.tobytes(),
        "lag": lag.tobytes(),
        "errors": errors,
        "cpu": (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system),
    }


def _sender_main(pipe, go, addresses, plan) -> None:
    pipe.send("ready")
    if not go.wait(30):
        pipe.send({"error": "never told to start"})
        return
    try:
        pipe.send(_send_all(addresses, plan))
    except BaseException as exc:  # report, do not hang the parent
        pipe.send({"error": repr(exc)})


@dataclass
class Sent:
    sent_at: array
    done_at: array
    statuses: array
    lag: array
    errors: Counter
    cpu: float
    started: float  # time.time() when the sender was told to go


def send_plan(plan: Plan, addresses: list[tuple[str, int]], timeout: float, sample=None) -> Sent:
    """Run the sender process; while it sends, call ``sample()`` every 0.25 s."""
    ctx = multiprocessing.get_context("fork")  # the child shares the pre-built requests
    parent_end, child_end = ctx.Pipe()
    go = ctx.Event()
    flat = [(item.offset, item.target, item.request) for item in plan.items]
    proc = ctx.Process(target=_sender_main, args=(child_end, go, addresses, flat), daemon=True)
    proc.start()
    try:
        if not parent_end.poll(30) or parent_end.recv() != "ready":
            raise RuntimeError(f"sender pid {proc.pid} did not start")
        started = time.time()
        go.set()
        deadline = time.monotonic() + timeout
        while not parent_end.poll(0.25):  # bounded by `deadline`
            if time.monotonic() > deadline:
                raise RuntimeError(f"sender pid {proc.pid} did not report within {timeout:.0f} s")
            if sample is not None:
                sample()
        part = parent_end.recv()
        if "error" in part:
            raise RuntimeError(f"sender pid {proc.pid} failed: {part['error']}")
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.kill()  # only our own child, by its handle
            proc.join(5)

    def doubles(raw: bytes) -> array:
        values = array("d")
        values.frombytes(raw)
        return values

    statuses = array("i")
    statuses.frombytes(part["statuses"])
    return Sent(
        doubles(part["sent_at"]),
        doubles(part["done_at"]),
        statuses,
        doubles(part["lag"]),
        part["errors"],
        part["cpu"],
        started,
    )


# -- analysis ----------------------------------------------------------------------------


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)  # measured companies, seconds
    webhook_rtt: list[float] = field(default_factory=list)  # completing webhooks' POST
    probe: list[float] = field(default_factory=list)  # direct POST to the subscriber
    segments: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rate: float = 0.0  # webhooks accepted per second, steady window
    companies: int = 0
    measured: int = 0
    slowest: list[tuple[float, str, dict[str, float]]] = field(default_factory=list)
    attempt_ms: list[float] = field(default_factory=list)  # deliveries' own HTTP exchange
    by_time: list[tuple[float, float, float]] = field(default_factory=list)  # accept, e2e, r->a


def parse_stamp(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def analyse(
    plan: Plan,
    sent: Sent,
    subscriber: Subscriber,
    conn: redis_lib.Redis,
    subscription_id: str,
) -> Result:
    result = Result(companies=len(plan.companies))
    statuses = Counter()
    accepted_at: dict[int, float] = {}
    completing_rtt: dict[int, float] = {}
    probe_sent: dict[str, float] = {}
    for index, item in enumerate(plan.items):
        status = sent.statuses[index]
        if item.target == 1:
            if status != 200:
                statuses[f"probe {status}"] += 1
            else:
                probe_sent[item.probe_id] = sent.sent_at[index]
            continue
        statuses[status] += 1
        if status != 202:
            continue
        done = sent.done_at[index]
        if done >= accepted_at.get(item.company, 0.0):
            accepted_at[item.company] = done
            completing_rtt[item.company] = done - sent.sent_at[index]
    webhooks = sum(1 for item in plan.items if item.target == 0)
    if sent.errors:
        result.problems.append(f"transport errors: {format_counts(sent.errors)}")
    wrong = {k: v for k, v in statuses.items() if k != 202}
    if wrong:
        result.problems.append(f"unexpected answers: {format_counts(wrong)}")
    if statuses.get(202, 0) != webhooks:
        result.problems.append(f"{statuses.get(202, 0)} of {webhooks} webhooks answered 202")

    window = (sent.started + plan.measured_from, sent.started + plan.measured_until)
    accepted_in_window = sum(
        1
        for i, item in enumerate(plan.items)
        if item.target == 0 and sent.statuses[i] == 202 and window[0] <= sent.done_at[i] < window[1]
    )
    result.rate = accepted_in_window / (window[1] - window[0])

    received = subscriber.received
    for item in received:
        if item.envelope.get("type") == "bench.probe" and item.webhook_id in probe_sent:
            result.probe.append(item.at - probe_sent.pop(item.webhook_id))
    if probe_sent:
        result.problems.append(f"{len(probe_sent)} probes answered 200 but not recorded")
    ready: dict[str, list] = defaultdict(list)
    for item in received:
        if item.envelope.get("type") == "company.ready":
            ready[item.envelope["data"]["companyId"]].append(item)
    known = set(plan.companies)
    strangers = set(ready) - known
    if strangers:
        result.problems.append(f"company.ready for {len(strangers)} companies never sent")
    missing = [cid for cid in plan.companies if cid not in ready]
    if missing:
        result.problems.append(f"{len(missing)} companies got no company.ready, e.g. {missing[:2]}")
    several = [cid for cid, items in ready.items() if len({i.webhook_id for i in items}) != 1]
    if several:
        result.problems.append(f"{len(several)} companies got more than one company.ready id")
    repeats = sum(len(items) - 1 for items in ready.values())
    if repeats:
        result.notes.append(f"{repeats} repeated receipts of the same id")
    if subscriber.state.rejected:
        result.problems.append(f"subscriber rejected {subscriber.state.rejected} requests")

    with conn.pipeline(transaction=False) as pipe:
        for company_id in plan.companies:
            pipe.get(KEYS.company(company_id))
        raws = pipe.execute()
    not_ready = [
        cid
        for cid, raw in zip(plan.companies, raws, strict=True)
        if raw is None or decode_record(raw).state.value != "ready"
    ]
    if not_ready:
        result.problems.append(f"{len(not_ready)} companies not stored as ready")

    deliveries = DeliveryStore(conn, KEYS)
    firsts = {cid: min(items, key=lambda r: r.at) for cid, items in ready.items() if cid in known}
    by_company = {
        cid: deliveries.get(delivery_id(first.webhook_id, subscription_id))
        for cid, first in firsts.items()
    }
    undelivered = [cid for cid, d in by_company.items() if d is None or d.status != "delivered"]
    if undelivered:
        result.problems.append(f"{len(undelivered)} deliveries not 'delivered'")
    retried = sum(1 for d in by_company.values() if d is not None and len(d.attempts) > 1)
    if retried:
        result.notes.append(f"{retried} deliveries needed more than one attempt")

    for index, company_id in enumerate(plan.companies):
        first = firsts.get(company_id)
        accept = accepted_at.get(index)
        if first is None or accept is None:
            continue
        if accept < sent.started + plan.measured_from:
            continue  # warm-up
        latency = first.at - accept
        result.latencies.append(latency)
        result.webhook_rtt.append(completing_rtt[index])
        delivery = by_company.get(company_id)
        if delivery is None or not delivery.attempts:
            continue
        commit = parse_stamp(first.envelope["timestamp"])
        parts = {
            "accept -> commit": commit - accept,
            "commit -> relay": delivery.created_at - commit,
            "relay -> attempt": delivery.attempts[0].at - delivery.created_at,
            "attempt -> receipt": first.at - delivery.attempts[0].at,
        }
        for name, value in parts.items():
            result.segments[name].append(value)
        result.attempt_ms.append(delivery.attempts[0].latency_ms / 1000)
        result.by_time.append((accept, latency, parts["relay -> attempt"]))
        result.slowest.append((latency, company_id, parts))
    result.measured = len(result.latencies)
    result.slowest.sort(reverse=True)
    del result.slowest[5:]
    if not result.latencies and not result.problems:
        result.problems.append("no company completed after the warm-up")
    return result


def job_stats(conn: redis_lib.Redis, queue_name: str) -> tuple[int, list[float], list[float]]:
    """Finished jobs still recorded (result_ttl): count, pickup delays, durations."""
    queue = Queue(queue_name, connection=conn)
    ids = FinishedJobRegistry(queue=queue).get_job_ids()
    pickups, durations = [], []
    with conn.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hmget(f"rq:job:{job_id}", "enqueued_at", "started_at", "ended_at")
        for enqueued, started, ended in pipe.execute():
            if enqueued and started and ended:
                e, s, d = (utcparse(v.decode()).timestamp() for v in (enqueued, started, ended))
                pickups.append(s - e)
                durations.append(d - s)
    return len(ids), sorted(pickups), sorted(durations)


def worker_busy(procs: list[Process], since: float, until: float) -> dict[str, tuple[int, float]]:
    """Jobs run by `procs` that ended in [since, until] (time.time()), by
    function: (count, seconds busy), from the one JSON line per job that
    workers/worker.py logs ({"event": "job", "function", "duration_ms",
    "timestamp"}). Empty if the workers log no such line."""
    busy: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for proc in procs:
        try:
            lines = proc.stdout_path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for raw in lines:
            if '"job"' not in raw:  # a quick skip; the JSON decides
                continue
            try:
                data = json.loads(raw)
                if data.get("event") != "job":
                    continue
                ended = parse_stamp(data["timestamp"])
                duration = float(data["duration_ms"]) / 1000
            except (ValueError, KeyError, TypeError):
                continue
            if since <= ended <= until:
                entry = busy[str(data.get("function", "?")).rsplit(".", 1)[-1]]
                entry[0] += 1
                entry[1] += duration
    return {name: (int(count), seconds) for name, (count, seconds) in busy.items()}


def dump(path: Path, plan: Plan, sent: Sent, subscriber: Subscriber) -> None:
    """Every request (offset, sent/answered at, status) and every receipt, for digging."""
    with path.open("w") as out:
        for index, item in enumerate(plan.items):
            record = {
                "kind": "probe" if item.target else "webhook",
                "company": plan.companies[item.company] if item.company >= 0 else None,
                "offset": item.offset,
                "sent_at": sent.sent_at[index],
                "done_at": sent.done_at[index],
                "status": sent.statuses[index],
            }
            out.write(json.dumps(record) + "\n")
        for received in subscriber.received:
            out.write(
                json.dumps(
                    {
                        "kind": "receipt",
                        "type": received.envelope.get("type"),
                        "id": received.webhook_id,
                        "company": (received.envelope.get("data") or {}).get("companyId"),
                        "at": received.at,
                    }
                )
                + "\n"
            )
    print(f"  timings written to {path}")


def settle(subscriber: Subscriber, conn: redis_lib.Redis, companies: int, idle: float) -> str:
    """After the last request: wait until every company's company.ready has
    arrived and no deliver job is queued or running, as long as receipts keep
    coming (at most `idle` seconds without a new one; 300 s in all)."""
    started = time.monotonic()
    last_count, last_change = -1, started
    queue = Queue(DELIVERY_QUEUE, connection=conn)
    while True:  # bounded: `idle` without progress, or 300 s
        now = time.monotonic()
        ready = {r.envelope["data"]["companyId"] for r in subscriber.of_type("company.ready")}
        if len(ready) >= companies and queue.count == 0 and not queue.started_job_registry.count:
            return f"all delivered {now - started:.1f} s after the last request"
        if len(ready) != last_count:
            last_count, last_change = len(ready), now
        if now - last_change > idle or now - started > 300:
            return f"gave up waiting after {now - started:.0f} s"
        time.sleep(0.05)


def check_queues(conn: redis_lib.Redis) -> list[str]:
    problems = []
    if conn.xlen(KEYS.inbox):
        problems.append(f"inbox holds {conn.xlen(KEYS.inbox)} entries")
    if conn.exists(KEYS.dead_letters) and conn.xlen(KEYS.dead_letters):
        problems.append(f"{conn.xlen(KEYS.dead_letters)} inbox dead letters")
    for name in (QUEUE, DELIVERY_QUEUE):
        failed = FailedJobRegistry(queue=Queue(name, connection=conn)).count
        if failed:
            problems.append(f"{failed} failed jobs on {name}")
    return problems


# -- reporting ---------------------------------------------------------------------------


def ratio(value: float) -> str:
    return f"{value:.1f}x" if value >= 1 else f"{value:.2f}x"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f}"


def pcts(values: list[float]) -> tuple[float, float, float, float]:
    ordered = sorted(values)
    return (
        percentile(ordered, 0.5),
        percentile(ordered, 0.9),
        percentile(ordered, 0.99),
        ordered[-1] if ordered else float("nan"),
    )


def line(label: str, values: list[float]) -> str:
    p50, p90, p99, top = pcts(values)
    return f"  {label:<34} {ms(p50)} {ms(p90)} {ms(p99)} {ms(top)}   n={len(values):,}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m perf.e2e_latency", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rate", type=float, default=200.0, help="webhooks per second (200)")
    parser.add_argument("--duration", type=float, default=25.0, help="steady seconds (25)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds left out (3)")
    parser.add_argument(
        "--gap", type=float, default=0.5, help="seconds between a company's events (0.5)"
    )
    parser.add_argument(
        "--probe-rate", type=float, default=20.0, help="direct subscriber POSTs per second (20)"
    )
    parser.add_argument(
        "--settle", type=float, default=30.0, help="give up after this long with no receipt (30)"
    )
    parser.add_argument(
        "--subscriber-nodelay",
        action="store_true",
        help="experiment: TCP_NODELAY on the subscriber's sockets (it then answers in ~1 ms "
        "instead of ~40 ms on a kept-alive connection: Nagle + delayed ACK)",
    )
    parser.add_argument(
        "--delivery-workers",
        type=int,
        default=0,
        help="experiment: extra `python -m workers --queues deliveries` processes (0)",
    )
    parser.add_argument("--dump", type=Path, help="write every request's timings (JSON lines)")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0 or args.probe_rate <= 0 or args.gap < 0:
        parser.error("rate, duration and probe rate must be positive, gap not negative")
    if args.warmup + args.duration > 300:
        parser.error("that would send for more than 5 minutes (signatures expire)")

    log_dir = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    print("end-to-end latency: webhook accepted -> company.ready received by a subscriber")
    print(
        f"  {args.rate:g} webhooks/s open loop (happy_path, a company every "
        f"{EVENTS_PER_COMPANY / args.rate * 1000:.0f} ms, its events {args.gap:g} s apart), "
        f"{args.warmup:g} s warm-up + {args.duration:g} s measured; gunicorn 2 workers + 2 x "
        f"python -m workers, LOG_LEVEL=INFO; baseline: webhook POST + direct subscriber POST "
        f"({args.probe_rate:g}/s, interleaved)"
    )
    print(f"  code: {code_version()}; process logs: {log_dir}")
    processes: list[Process] = []
    if args.subscriber_nodelay or args.delivery_workers:
        print(
            "  EXPERIMENT: "
            + ", ".join(
                (["subscriber with TCP_NODELAY"] if args.subscriber_nodelay else [])
                + (
                    [f"+{args.delivery_workers} delivery-only worker process(es)"]
                    if args.delivery_workers
                    else []
                )
            )
        )
    samples: list[tuple[float, int, int]] = []  # time, deliver jobs queued, inbox entries
    with start_redis() as server, Subscriber() as subscriber:
        if args.subscriber_nodelay:  # the handler class is this subscriber's own
            subscriber._server.RequestHandlerClass.disable_nagle_algorithm = True
        conn = redis_lib.Redis.from_url(server.url)
        try:
            env = {**app_env(server.url, "INFO"), "ALLOW_PRIVATE_SUBSCRIBER_URLS": "1"}
            workers = start_rq_workers(env, 2, log_dir=log_dir)
            processes += workers
            if args.delivery_workers:
                extra = start_rq_workers(
                    env,
                    args.delivery_workers,
                    args=["--queues", "deliveries"],
                    log_dir=log_dir / "delivery-workers",
                )
                processes += extra
                workers = workers + extra
            web = start_gunicorn(env, workers=2, log_dir=log_dir)
            processes.append(web)
            wait_idle(conn, workers[:2], QUEUE)
            print(
                f"  redis {conn.info('server').get('redis_version', '?')} (private, pid "
                f"{server.pid}); web {web.url}; subscriber {subscriber.url}",
                flush=True,
            )
            with httpx.Client(trust_env=False, timeout=10) as client:
                answer = client.post(
                    f"{web.url}/api/subscriptions",
                    headers={"Authorization": f"Bearer {TEST_API_TOKEN}"},
                    json={"url": subscriber.url, "eventTypes": ["company.ready"]},
                )
            if answer.status_code != 201:
                raise RuntimeError(f"POST /api/subscriptions: {answer.status_code} {answer.text}")
            subscription = answer.json()
            subscriber.set(secret=subscription["secret"])
            web_port = int((web.url or "").rsplit(":", 1)[1])
            plan = make_plan(args, web_port, subscriber.port, subscription["secret"])

            pids = {"gunicorn": [web.pid], "workers": [w.pid for w in workers]}
            pids["redis"] = [server.pid or 0]
            cpu_before = {name: cpu_seconds(p) for name, p in pids.items()}
            machine_before, own = machine_busy_seconds(), own_cpu_seconds()
            wall = time.monotonic()

            def sample() -> None:
                with conn.pipeline(transaction=False) as pipe:
                    pipe.llen(f"rq:queue:{DELIVERY_QUEUE}")
                    pipe.xlen(KEYS.inbox)
                    queued, inbox = pipe.execute()
                samples.append((time.time(), int(queued), int(inbox)))

            sent = send_plan(
                plan,
                [(HOST, web_port), (HOST, subscriber.port)],
                args.warmup + args.duration + 60,
                sample,
            )
            settled = settle(subscriber, conn, len(plan.companies), args.settle)
            elapsed = time.monotonic() - wall
            cpu = {name: cpu_seconds(p) - cpu_before[name] for name, p in pids.items()}
            cpu["sender"] = sent.cpu
            cpu["bench (subscriber)"] = own_cpu_seconds() - own
            others = max(0.0, machine_busy_seconds() - machine_before - sum(cpu.values())) / elapsed
            result = analyse(plan, sent, subscriber, conn, subscription["id"])
            result.notes.append(settled)
            if args.dump:
                dump(args.dump, plan, sent, subscriber)
            result.problems += check_queues(conn)
            drains = job_stats(conn, QUEUE)
            window = (sent.started + args.warmup, sent.started + args.warmup + args.duration)
            busy = worker_busy(workers, *window)
            for proc in processes:
                if not proc.is_running():
                    result.problems.append(f"{proc.describe()} died")
        finally:
            for proc in processes:
                proc.stop()
            conn.close()
    webhooks = sum(1 for item in plan.items if item.target == 0)
    steady = [x for x in samples if window[0] <= x[0] <= window[1]]
    return report(args, result, sent, cpu, others, webhooks, drains, busy, steady, len(workers))


def report(
    args, result: Result, sent: Sent, cpu, others, webhooks, drains, busy, samples, n_workers
) -> int:
    if result.problems:
        print(
            "\n!!! FAILED: "
            + "; ".join(result.problems + result.notes)
            + "\nno latency is reported."
        )
        return 1
    lag = sorted(sent.lag)
    print(
        f"\nsent {webhooks:,} webhooks of {result.companies:,} companies; accepted "
        f"{result.rate:,.1f}/s in the steady window (target rate {args.rate:g}/s); sender lag "
        f"p50 {percentile(lag, 0.5) * 1000:.1f} ms p99 {percentile(lag, 0.99) * 1000:.1f} ms; "
        f"{result.measured:,} companies measured after the warm-up"
        + (f"; {'; '.join(result.notes)}" if result.notes else "")
    )
    per_event = ", ".join(f"{name} {value * 1000 / webhooks:.2f}" for name, value in cpu.items())
    print(f"  CPU ms per webhook: {per_event}; others {others:.1f} cores")
    count, pickups, durations = drains
    if count:
        print(
            f"  drain jobs still recorded (result_ttl 60 s): {count:,} "
            f"({count / max(webhooks, 1):.2f} per webhook); pickup p50 "
            f"{percentile(pickups, 0.5) * 1000:.1f} ms p99 {percentile(pickups, 0.99) * 1000:.1f} "
            f"ms; duration p50 {percentile(durations, 0.5) * 1000:.1f} ms p99 "
            f"{percentile(durations, 0.99) * 1000:.1f} ms"
        )
    if busy:
        total = sum(seconds for _, seconds in busy.values())
        print(
            f"  worker processes busy in the measured {args.duration:g} s: "
            + ", ".join(
                f"{name} {count:,} jobs of {seconds / count * 1000:.1f} ms avg"
                f" -> {seconds / args.duration:.2f} workers"
                for name, (count, seconds) in sorted(busy.items())
            )
            + f"; in all {total / args.duration:.2f} of {n_workers} processes busy "
            f"({total / args.duration / n_workers:.0%})"
        )
    delivered = busy.get("deliver", (0, 0.0))[0] / args.duration
    produced = result.rate / EVENTS_PER_COMPANY  # companies completed per second
    if busy:
        print(
            f"  company.ready produced {produced:.1f}/s (accepted webhooks / 5), deliver jobs "
            f"completed "
            f"{delivered:.1f}/s in the measured window"
            + (
                f" -> deliveries FALL BEHIND by {produced - delivered:.1f}/s: the RQ backlog and "
                "the latency grow for as long as the load lasts (no steady state)"
                if delivered < 0.95 * produced
                else " (keeping up)"
            )
        )
    if samples:
        queued = [q for _, q, _ in samples]
        inbox = [i for _, _, i in samples]
        print(
            f"  sampled every 0.25 s in the measured window: deliver jobs waiting in RQ "
            f"p50 {median(queued):.0f} max {max(queued)} last {queued[-1]}; inbox entries "
            f"p50 {median(inbox):.0f} max {max(inbox)}"
        )
    print(f"\n  {'ms':<34} {'p50':>7} {'p90':>7} {'p99':>7} {'max':>7}")
    print(line("webhook accepted -> company.ready", result.latencies))
    for name in ("accept -> commit", "commit -> relay", "relay -> attempt", "attempt -> receipt"):
        print(line("  " + name, result.segments[name]))
    print(line("  (deliver: its HTTP exchange)", result.attempt_ms))
    print(line("baseline: webhook POST (completing)", result.webhook_rtt))
    print(line("baseline: direct POST to subscriber", result.probe))
    p50, _, p99, _ = pcts(result.latencies)
    floor50 = pcts(result.webhook_rtt)[0] + pcts(result.probe)[0]
    floor99 = pcts(result.webhook_rtt)[2] + pcts(result.probe)[2]
    print(
        f"  floor (webhook POST + direct POST): p50 {floor50 * 1000:.1f} ms, p99 "
        f"{floor99 * 1000:.1f} ms -> end to end is {ratio(p50 / floor50)} the floor at p50, "
        f"{ratio(p99 / floor99)} at p99"
    )
    if len(result.by_time) >= 30:
        ordered = sorted(result.by_time)
        thirds = [ordered[i * len(ordered) // 3 : (i + 1) * len(ordered) // 3] for i in range(3)]
        print(
            "  by thirds of the measured window, p50 end to end / relay -> attempt (ms): "
            + ", ".join(
                f"{median(x[1] for x in part) * 1000:.0f} / {median(x[2] for x in part) * 1000:.0f}"
                for part in thirds
            )
        )
    if result.slowest:
        print("  slowest companies (ms: " + ", ".join(result.slowest[0][2]) + "):")
        for latency, company_id, parts in result.slowest:
            detail = " ".join(f"{v * 1000:.0f}" for v in parts.values())
            print(f"    {latency * 1000:7.1f}  {company_id}  [{detail}]")
    met = p50 <= TARGET_P50 and p99 <= TARGET_P99
    print(
        f"end to end at {result.rate:,.0f} webhooks/s: p50 {p50 * 1000:.1f} ms, p99 "
        f"{p99 * 1000:.1f} ms ({ratio(p50 / floor50)} / {ratio(p99 / floor99)} the floor) "
        f"-> target p50 <= {TARGET_P50 * 1000:.0f} ms, p99 <= {TARGET_P99 * 1000:.0f} ms "
        f"{'MET' if met else 'NOT MET'} ({time.monotonic() - STARTED:.0f} s in all)"
    )
    return 0


if __name__ == "__main__":
    run_main(main)
