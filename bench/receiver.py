"""Signed Codat webhooks accepted per second by the web tier, against bare Flask.

Target: the receiver (``app:create_app()``) accepts at least 0.7x the requests
per second that a bare Flask endpoint (``bench/bare_app.py``: read the body,
answer 202) serves under the same gunicorn settings on the same machine.

Run from the repository root::

    python -m bench.receiver                     # ~1-1.5 min with the defaults
    python -m bench.receiver --duration 5 --rounds 3 --connections 16
    python -m bench.receiver --worker-class gthread --threads 4

What happens:

* a private Redis is started (``devtools.redis_server``; never the shared
  6379), and one gunicorn per configuration, all with identical settings
  (by default the Procfile's: ``--workers 2``, sync workers, access log to
  stdout, which goes to a file): bare Flask, the receiver at ``LOG_LEVEL=INFO``
  (production's level, the headline) and at ``LOG_LEVEL=WARNING``;
* no RQ worker runs: this measures the web tier alone. Accepted webhooks just
  pile up in the inbox, which is emptied between runs;
* requests are realistic and unique: bodies from ``devtools.lifecycles``
  (every lifecycle kind, a new company each time), each with its own
  ``webhook-id``, signed with the ``svix`` library just before each run (the
  signatures are only valid for 5 minutes), pre-built as raw bytes;
* the load comes from ``bench/loadgen.py`` (closed loop, N connections,
  pre-built requests, 1 client process by default) on the same 2 cores, for
  ``--duration`` seconds per run, configurations alternating within a round
  (the order mirrored every other round), after a short warm-up per server;
* every receiver response must be 202 and the inbox must hold exactly as many
  entries as 202s were answered; otherwise the run is reported as FAILED, with
  no rate, and the exit status is 1.

Reported per configuration: the median req/s over the rounds, p50/p99
latency (pooled over rounds, connect time included: sync workers close every
connection), status counts, and server CPU per request (gunicorn master and
workers; Redis separately), which is less sensitive to a noisy neighbour than
a rate. The load generator shares the CPU: it costs the same per request for
both apps, which takes a larger share of the machine while measuring the
faster app, so the ratio leans towards 1; the CPU-per-request ratio does not.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import redis as redis_lib

from bench.loadgen import LoadResult, build_request, run_load
from bench.support import app_env, cpu_seconds, format_counts, median
from devtools.lifecycles import LIFECYCLES, build
from devtools.redis_server import RedisServer, start_redis_server
from devtools.signing import encode_body, signed_headers
from tests.processes import TEST_WEBHOOK_SECRET, Process, start_gunicorn

PATH = "/webhooks/codat"
HOST = "127.0.0.1"
TARGET_RATIO = 0.7
INBOX_KEY = "authflow:inbox"
MAX_REQUESTS_PER_SECOND = 20_000  # caps the pre-built request pool


@dataclass
class Config:
    name: str  # "bare", "INFO", "WARNING"
    label: str
    web: Process
    port: int
    real: bool
    expected_rate: float = 0.0  # from the warm-up; sizes the request pool


@dataclass
class Run:
    config: Config
    round: int
    load: LoadResult
    server_cpu: float  # seconds, gunicorn master + workers
    redis_cpu: float
    inbox_entries: int | None
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def unique_bodies(count: int) -> list[bytes]:
    """`count` distinct Codat webhook bodies: whole lifecycles of new
    companies, cycling through every lifecycle kind."""
    kinds = sorted(LIFECYCLES)
    bodies: list[bytes] = []
    for index in range(count):  # each lifecycle yields >= 1 body: bounded
        if len(bodies) >= count:
            break
        life, _expected = build(kinds[index % len(kinds)])
        bodies += [encode_body(body) for body in life.events]
    return bodies[:count]


def signed_requests(port: int, count: int) -> list[bytes]:
    """`count` POST requests, unique bodies and webhook ids, signed now."""
    now = datetime.now(UTC)
    return [
        build_request(
            HOST,
            port,
            PATH,
            signed_headers(
                TEST_WEBHOOK_SECRET, body, webhook_id=f"msg_{uuid.uuid4().hex}", timestamp=now
            ),
            body,
        )
        for body in unique_bodies(count)
    ]


def gunicorn_args(args: argparse.Namespace) -> list[str]:
    extra = ["--worker-class", args.worker_class]
    if args.worker_class == "gthread":
        extra += ["--threads", str(args.threads)]
    if not args.no_access_log:
        extra += ["--access-logfile", "-"]
    return extra


def check(config: Config, load: LoadResult, inbox_entries: int | None) -> list[str]:
    problems = []
    if load.errors:
        problems.append(f"transport errors: {format_counts(load.errors)}")
    wrong = {status: n for status, n in load.statuses.items() if status != 202}
    if wrong:
        problems.append(f"non-202 responses: {format_counts(wrong)}")
    if load.completed == 0:
        problems.append("no response at all")
    if config.real and inbox_entries != load.statuses.get(202, 0):
        problems.append(
            f"inbox holds {inbox_entries} entries but {load.statuses.get(202, 0)} were accepted"
        )
    return problems


def measure(
    config: Config,
    round_no: int,
    args: argparse.Namespace,
    redis_server: RedisServer,
    conn: redis_lib.Redis,
    *,
    duration: float,
    count: int,
) -> Run:
    conn.flushall()  # private server: an empty inbox for every run
    requests = signed_requests(config.port, count)
    cpu_web, cpu_redis = cpu_seconds([config.web.pid]), cpu_seconds([redis_server.pid or 0])
    load = run_load(
        HOST,
        config.port,
        requests,
        connections=args.connections,
        processes=args.clients,
        duration=duration,
    )
    cpu_web = cpu_seconds([config.web.pid]) - cpu_web
    cpu_redis = cpu_seconds([redis_server.pid or 0]) - cpu_redis
    entries = int(conn.xlen(INBOX_KEY)) if config.real else None
    del requests
    problems = check(config, load, entries)
    if not config.web.is_running():
        problems.append(f"gunicorn exited:\n{config.web.output_tail(15)}")
    return Run(config, round_no, load, cpu_web, cpu_redis, entries, problems)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def per_request(seconds: float, load: LoadResult) -> str:
    return f"{seconds * 1000 / max(load.completed, 1):.2f}"


def describe_run(run: Run) -> str:
    load = run.load
    head = f"  round {run.round}  {run.config.label:<18}"
    if not run.ok:
        return head + " FAILED: " + "; ".join(run.problems)
    cpu = f"gunicorn {per_request(run.server_cpu, load)}"
    if run.config.real:
        cpu += f" + redis {per_request(run.redis_cpu, load)}"
    short = " (ran out of pre-built requests)" if load.exhausted else ""
    return (
        f"{head} {load.rate:7,.0f} req/s  p50 {ms(load.p(0.5))}  p99 {ms(load.p(0.99))}  "
        f"CPU ms/req {cpu}, client {per_request(load.client_cpu_seconds, load)}  "
        f"[{format_counts(load.statuses)} in {load.elapsed:.1f} s]{short}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.receiver", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per run (8)")
    parser.add_argument("--rounds", type=int, default=2, help="runs per configuration (2)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per server")
    parser.add_argument("--connections", type=int, default=8, help="concurrent connections (8)")
    parser.add_argument("--clients", type=int, default=1, help="load generator processes (1)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (2)")
    parser.add_argument("--worker-class", choices=["sync", "gthread"], default="sync")
    parser.add_argument("--threads", type=int, default=4, help="threads per gthread worker")
    parser.add_argument(
        "--no-access-log", action="store_true", help="drop the Procfile's --access-logfile -"
    )
    parser.add_argument(
        "--levels",
        default="INFO,WARNING",
        help="receiver LOG_LEVELs to run; the first is the headline (INFO,WARNING)",
    )
    args = parser.parse_args(argv)
    levels = [level.strip().upper() for level in args.levels.split(",") if level.strip()]
    if not levels or args.rounds < 1 or args.duration <= 0 or args.connections < 1:
        parser.error("need at least one level, one round, a positive duration and connection")
    if args.duration * args.rounds * (len(levels) + 1) > 900:
        parser.error("that would measure for more than 15 minutes")

    log_dir = Path(tempfile.mkdtemp(prefix="bench-receiver-"))
    extra = gunicorn_args(args)
    print("receiver benchmark: signed webhooks accepted per second vs bare Flask")
    print(
        f"  gunicorn --workers {args.workers} {' '.join(extra)} (same for both apps); "
        f"{args.connections} connections from {args.clients} client process(es); "
        f"{args.duration:g} s x {args.rounds} rounds per configuration"
    )
    print("  no RQ workers running: the web tier alone (the inbox just grows)")
    print(f"  process logs: {log_dir}")

    runs: list[Run] = []
    processes: list[Process] = []
    with start_redis_server() as redis_server:
        conn = redis_lib.Redis.from_url(redis_server.url)
        version = conn.info("server").get("redis_version", "?")
        try:
            configs = []
            for name in ["bare", *levels]:
                real = name != "bare"
                web = start_gunicorn(
                    app_env(redis_server.url, name if real else "INFO"),
                    workers=args.workers,
                    app="app:create_app()" if real else "bench.bare_app:create_app()",
                    extra_args=extra,
                    log_dir=log_dir,
                    name=f"gunicorn-{name.lower()}",
                )
                processes.append(web)
                port = int((web.url or "").rsplit(":", 1)[1])
                label = f"receiver {name}" if real else "bare Flask"
                configs.append(Config(name, label, web, port, real))
            print(f"  redis {version} (private, pid {redis_server.pid}); warming up ...")
            for config in configs:
                warm = measure(
                    config,
                    0,
                    args,
                    redis_server,
                    conn,
                    duration=args.warmup,
                    count=int(args.warmup * MAX_REQUESTS_PER_SECOND / 3),
                )
                if not warm.ok:
                    print(describe_run(warm).replace("round 0", "warm-up"))
                    print("FAILED during warm-up: no rates reported.")
                    return 1
                config.expected_rate = warm.load.rate
            for round_no in range(1, args.rounds + 1):
                order = configs if round_no % 2 else configs[::-1]
                for config in order:
                    count = int(
                        min(
                            max(config.expected_rate * args.duration * 2, 2_000),
                            MAX_REQUESTS_PER_SECOND * args.duration,
                        )
                    )
                    run = measure(
                        config,
                        round_no,
                        args,
                        redis_server,
                        conn,
                        duration=args.duration,
                        count=count,
                    )
                    runs.append(run)
                    print(describe_run(run), flush=True)
        finally:
            for process in processes:
                process.stop()
            conn.close()
    return report(runs, levels)


def report(runs: list[Run], levels: list[str]) -> int:
    failed = [run for run in runs if not run.ok]
    if failed:
        print("\n!!! FAILED: " + str(len(failed)) + " run(s) had errors (see above); no rate or "
              "ratio is reported for a run with errors.")  # fmt: skip
        return 1
    by_name: dict[str, list[Run]] = {}
    for run in runs:
        by_name.setdefault(run.config.name, []).append(run)

    def summary(name: str) -> tuple[float, float, float, float]:
        group = by_name[name]
        pooled = sorted(x for run in group for x in run.load.latencies)
        p50, p99 = pooled[len(pooled) // 2], pooled[min(len(pooled) - 1, int(len(pooled) * 0.99))]
        requests = sum(run.load.completed for run in group)
        cpu = sum(run.server_cpu + (run.redis_cpu if run.config.real else 0) for run in group)
        cpu /= requests
        return median(run.load.rate for run in group), p50, p99, cpu

    bare = summary("bare")
    print(f"\nmedian of {len(by_name['bare'])} round(s); latency pooled over rounds:")
    print(f"  {'bare Flask':<18} {bare[0]:7,.0f} req/s  p50 {ms(bare[1])}  p99 {ms(bare[2])}")
    ratios = {}
    for level in levels:
        real = summary(level)
        ratios[level] = real[0] / bare[0]
        per_round = [
            r.load.rate / b.load.rate for r, b in zip(by_name[level], by_name["bare"], strict=True)
        ]
        print(
            f"  {'receiver ' + level:<18} {real[0]:7,.0f} req/s  p50 {ms(real[1])}  "
            f"p99 {ms(real[2])}  ratio {ratios[level]:.2f} "
            f"(per round {', '.join(f'{x:.2f}' for x in per_round)}; "
            f"server CPU/req ratio {bare[3] / real[3]:.2f})"
        )
    headline = levels[0]
    met = ratios[headline] >= TARGET_RATIO
    print(
        f"ratio receiver/bare Flask at LOG_LEVEL={headline}: {ratios[headline]:.2f} -> target "
        f">= {TARGET_RATIO} {'MET' if met else 'NOT MET'}"
    )
    return 0


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    print(f"(took {time.monotonic() - started:.0f} s)")
    sys.exit(code)
