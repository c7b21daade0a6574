"""Signed Codat webhooks accepted per second by the web tier, against bare Flask.

Target: the receiver (``app:create_app()``) accepts at least 0.7x the requests
per second that a bare Flask endpoint (``perf/bare_app.py``: read the body,
answer 202) serves under the same gunicorn settings on the same machine.

Run from the repository root::

    python -m perf.receiver                     # ~1.5 min with the defaults
    python -m perf.receiver --duration 5 --rounds 4 --connections 16
    python -m perf.receiver --worker-class gthread --threads 4
    python -m perf.receiver --variants without_store,without_log   # what each part costs

What happens:

* a private Redis is started (``tests.support.processes.start_redis``; never the shared
  6379), and one gunicorn per configuration, all with identical settings:
  production's ``--config python:app.gunicorn_conf`` (gthread, 64 threads a
  worker), ``--workers 2``, whatever other options the Procfile's ``web:``
  line has today (read at start-up), plus
  ``--worker-class``/``--access-log`` if given. Output goes to files. The
  configurations: bare Flask, the receiver at ``LOG_LEVEL=INFO``
  (production's level, the headline) and at ``LOG_LEVEL=WARNING``;
* no RQ worker runs: this measures the web tier alone. Accepted webhooks just
  pile up in the inbox, which is emptied between runs;
* requests are realistic and unique: bodies from ``tests.support.lifecycles``
  (every lifecycle kind, a new company each time), each with its own
  ``webhook-id``, signed with the ``svix`` library just before each run (the
  signatures are only valid for 5 minutes), pre-built as raw bytes;
* the load comes from ``perf/loadgen.py`` (closed loop, N connections,
  pre-built requests, 1 client process by default) on the same 2 cores, for
  ``--duration`` seconds per run, configurations alternating within a round
  (the order mirrored every other round), after a short warm-up per server;
* each connection is closed after ``--requests-per-connection`` requests
  (100) and another opened. Which gunicorn worker accepts a connection is
  chance, and with 8 connections kept for a whole run all of them landed on
  one of the 2 workers often enough to halve either app's rate in a round
  (rounds of 0.30 and 1.54 in one run); renewing them averages the split
  within each run, as a real client's connection pool does over time;
* every receiver response must be 202 and the inbox must hold exactly as many
  entries as 202s were answered; otherwise the run is reported as FAILED, with
  no rate, and the exit status is 1.

Reported per configuration: the median req/s over the rounds, p50/p99
latency (pooled over rounds; connect time included, as sync workers close
every connection), status counts, and server CPU per request (gunicorn
master and workers, plus Redis for the receiver). The ratio is the median over
rounds of receiver req/s / bare req/s within the same round: short runs,
paired in time, because other processes on the machine come and go (each run
line says how many cores they kept busy: "others"; the ratio over the rounds
where both runs had others < 0.25 cores is printed too). The load generator shares
the 2 cores and costs the same per request for both apps, so it takes a larger
share while the faster app is measured and the rate ratio leans towards 1;
the server-CPU-per-request ratio, also printed, does not, and is the steadier
of the two on a busy machine.
"""

from __future__ import annotations

import argparse
import re
import shlex
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import redis as redis_lib

from perf.loadgen import LoadResult, build_request, percentile, run_load
from perf.receiver_variants import VARIANTS
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
from tests.support.lifecycles import LIFECYCLES, build
from tests.support.processes import (
    REPO_ROOT,
    TEST_WEBHOOK_SECRET,
    Process,
    RedisServer,
    start_gunicorn,
    start_redis,
)
from tests.support.signing import encode_body, signed_headers

PATH = "/webhooks/codat"
HOST = "127.0.0.1"
TARGET_RATIO = 0.7
INBOX_KEY = "authflow:inbox"
MIN_REQUESTS_PER_SECOND = 5_000  # the pre-built request pool per run: at least ...
MAX_REQUESTS_PER_SECOND = 20_000  # ... and at most this many per second of --duration
STARTED = time.monotonic()
APP_SPEC = re.compile(r"^[\w.]+:[\w.]+(\(.*\))?$")  # 'app:create_app()'
QUIET_CORES = 0.25  # a round is "quiet" if other processes kept fewer cores busy


@dataclass
class Config:
    name: str  # "bare", "INFO", "WARNING", or a variant's name
    label: str
    web: Process
    port: int
    real: bool  # it stores webhooks: the inbox must hold as many entries as 202s
    expected_rate: float = 0.0  # the best rate seen so far; sizes the request pool


@dataclass
class Run:
    config: Config
    round: int
    load: LoadResult
    server_cpu: float  # seconds, gunicorn master + workers
    redis_cpu: float
    others: float  # cores kept busy by other processes on the machine meanwhile
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


def procfile_web_options(procfile: Path = REPO_ROOT / "Procfile") -> list[str]:
    """The gunicorn options of the Procfile's ``web:`` line, except ``--bind``
    and ``--workers`` (set here) and the app: production's settings, whatever
    they are today. ``${NAME:-default}`` becomes ``default``."""
    try:
        lines = procfile.read_text().splitlines()
    except OSError:
        return []
    web = next((line[4:] for line in lines if line.startswith("web:")), "")
    argv = shlex.split(re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", web))
    options: list[str] = []
    index = 1  # past "gunicorn"
    while index < len(argv):  # bounded: every pass moves on
        token = argv[index]
        if token in ("-b", "--bind", "-w", "--workers", "-c", "--config"):  # start_gunicorn's
            index += 2
            continue
        if not token.startswith(("--bind=", "--workers=", "--config=")) and not APP_SPEC.match(
            token
        ):
            options.append(token)
        index += 1
    return options


def gunicorn_args(args: argparse.Namespace) -> list[str]:
    """The same for both apps: the Procfile's options plus the ones asked for."""
    extra = procfile_web_options()
    if args.worker_class:
        extra += ["--worker-class", args.worker_class]
        if args.worker_class == "gthread":
            extra += ["--threads", str(args.threads)]
    if args.access_log:
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
    busy, own = machine_busy_seconds(), own_cpu_seconds()
    load = run_load(
        HOST,
        config.port,
        requests,
        connections=args.connections,
        processes=args.clients,
        duration=duration,
        requests_per_connection=args.requests_per_connection or None,
    )
    cpu_web = cpu_seconds([config.web.pid]) - cpu_web
    cpu_redis = cpu_seconds([redis_server.pid or 0]) - cpu_redis
    ours = cpu_web + cpu_redis + load.client_cpu_seconds + own_cpu_seconds() - own
    others = max(0.0, machine_busy_seconds() - busy - ours) / load.elapsed
    entries = int(conn.xlen(INBOX_KEY)) if config.real else None
    del requests
    problems = check(config, load, entries)
    if not config.web.is_running():
        problems.append(f"gunicorn exited:\n{config.web.output_tail(15)}")
    return Run(config, round_no, load, cpu_web, cpu_redis, others, entries, problems)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def per_request(seconds: float, load: LoadResult) -> str:
    return f"{seconds * 1000 / max(load.completed, 1):.2f}"


def describe_run(run: Run) -> str:
    load = run.load
    head = f"  {f'r{run.round}' if run.round else 'warm-up'} {run.config.label:<16}"
    if not run.ok:
        return head + " FAILED: " + "; ".join(run.problems)
    cpu = f"gunicorn {per_request(run.server_cpu, load)}"
    if run.config.real:
        cpu += f" redis {per_request(run.redis_cpu, load)}"
    short = " (ran out of pre-built requests)" if load.exhausted else ""
    return (
        f"{head} {load.rate:6,.0f} req/s  p50 {ms(load.p(0.5))} p99 {ms(load.p(0.99))}  "
        f"CPU ms/req: {cpu} client {per_request(load.client_cpu_seconds, load)}  "
        f"others {run.others:.1f} cores  [{format_counts(load.statuses)}]{short}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m perf.receiver", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run (3)")
    parser.add_argument("--rounds", type=int, default=6, help="runs per configuration (6)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per server")
    parser.add_argument("--connections", type=int, default=8, help="concurrent connections (8)")
    parser.add_argument("--clients", type=int, default=1, help="load generator processes (1)")
    parser.add_argument(
        "--requests-per-connection",
        type=int,
        default=100,
        help="close each connection after this many requests and open a new one; "
        "0: keep it as long as the server does (100)",
    )
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (2)")
    parser.add_argument(
        "--worker-class",
        choices=["sync", "gthread"],
        help="default: gthread (app/gunicorn_conf.py)",
    )
    parser.add_argument("--threads", type=int, default=4, help="threads per gthread worker")
    parser.add_argument(
        "--access-log", action="store_true", help="add gunicorn's --access-logfile - (both apps)"
    )
    parser.add_argument(
        "--levels",
        default="INFO,WARNING",
        help="receiver LOG_LEVELs to run; the first is the headline (INFO,WARNING)",
    )
    parser.add_argument(
        "--variants",
        default="",
        help="also run these receivers with one part taken out, at the first level: "
        f"{', '.join(VARIANTS)} (perf/receiver_variants.py)",
    )
    args = parser.parse_args(argv)
    levels = [level.strip().upper() for level in args.levels.split(",") if level.strip()]
    variants = [name.strip() for name in args.variants.split(",") if name.strip()]
    unknown = [name for name in variants if name not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    if not levels or args.rounds < 1 or args.duration <= 0 or args.connections < 1:
        parser.error("need at least one level, one round, a positive duration and connection")
    if args.duration * args.rounds * (len(levels) + len(variants) + 1) > 900:
        parser.error("that would measure for more than 15 minutes")

    log_dir = Path(tempfile.mkdtemp(prefix="bench-receiver-"))
    extra = gunicorn_args(args)
    print("receiver benchmark: signed webhooks accepted per second vs bare Flask")
    print(
        "  gunicorn --config python:app.gunicorn_conf (production's: gthread, GUNICORN_THREADS) "
        f"--workers {args.workers} "
        f"{' '.join(extra) or '(the Procfile adds no option)'} (same for both apps); "
        f"{args.connections} connections from {args.clients} client process(es); "
        f"{args.duration:g} s x {args.rounds} rounds per configuration"
    )
    print("  no RQ workers running: the web tier alone (the inbox just grows)")
    print(f"  code: {code_version()}; process logs: {log_dir}")

    runs: list[Run] = []
    processes: list[Process] = []
    with start_redis() as redis_server:
        conn = redis_lib.Redis.from_url(redis_server.url)
        version = conn.info("server").get("redis_version", "?")
        try:
            configs = []
            for name in ["bare", *levels]:
                real = name != "bare"
                web = start_gunicorn(
                    app_env(redis_server.url, name if real else "INFO"),
                    workers=args.workers,
                    app="app:create_app()" if real else "perf.bare_app:create_app()",
                    extra_args=extra,
                    log_dir=log_dir,
                    name=f"gunicorn-{name.lower()}",
                )
                processes.append(web)
                port = int((web.url or "").rsplit(":", 1)[1])
                label = f"receiver {name}" if real else "bare Flask"
                configs.append(Config(name, label, web, port, real))
            for name in variants:
                web = start_gunicorn(
                    app_env(redis_server.url, levels[0]),
                    workers=args.workers,
                    app=f"perf.receiver_variants:{name}()",
                    extra_args=extra,
                    log_dir=log_dir,
                    name=f"gunicorn-{name}",
                )
                processes.append(web)
                port = int((web.url or "").rsplit(":", 1)[1])
                configs.append(Config(name, name, web, port, VARIANTS[name][1]))
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
                    print(describe_run(warm))
                    print("\n!!! FAILED during warm-up: no rates reported.")
                    return 1
                config.expected_rate = warm.load.rate
            for round_no in range(1, args.rounds + 1):
                order = configs if round_no % 2 else configs[::-1]
                for config in order:
                    # Enough requests for twice the best rate seen so far (a
                    # warm-up on a busy machine underestimates), within bounds.
                    count = int(
                        args.duration
                        * min(
                            max(config.expected_rate * 2, MIN_REQUESTS_PER_SECOND),
                            MAX_REQUESTS_PER_SECOND,
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
                    config.expected_rate = max(config.expected_rate, run.load.rate)
                    print(describe_run(run), flush=True)
        finally:
            for process in processes:
                process.stop()
            conn.close()
    return report(runs, levels, variants)


def report(runs: list[Run], levels: list[str], variants: list[str]) -> int:
    failed = [run for run in runs if not run.ok]
    if failed:
        print(
            f"\n!!! FAILED: {len(failed)} run(s) had errors (see above); no rate or ratio "
            "is reported when a run has errors."
        )
        return 1
    by_name: dict[str, list[Run]] = {}
    for run in runs:
        by_name.setdefault(run.config.name, []).append(run)

    def line(name: str, label: str) -> str:
        group = by_name[name]
        pooled = sorted(x for run in group for x in run.load.latencies)
        statuses: Counter = Counter()
        for run in group:
            statuses.update(run.load.statuses)
        return (
            f"  {label:<18} {median(r.load.rate for r in group):6,.0f} req/s  "
            f"p50 {ms(percentile(pooled, 0.5))} p99 {ms(percentile(pooled, 0.99))}  "
            f"server CPU {cpu_per_request(name) * 1000:.2f} ms/req  [{format_counts(statuses)}]"
        )

    def cpu_per_request(name: str) -> float:
        group = by_name[name]
        used = sum(run.server_cpu + (run.redis_cpu if run.config.real else 0) for run in group)
        return used / sum(run.load.completed for run in group)

    rounds = len(by_name["bare"])
    print(
        f"\nmedians of {rounds} rounds; latency and statuses pooled; server CPU = gunicorn "
        f"(+ redis); others = median {median(r.others for r in runs):.1f} cores busy with "
        f"other processes ({time.monotonic() - STARTED:.0f} s in all)"
    )
    print(line("bare", "bare Flask"))
    ratios = {}
    for level in [*levels, *variants]:
        # Each real run is paired with the bare run of its round (adjacent in
        # time), so a neighbour's burst of load cancels out more than it would
        # in a ratio of two medians.
        per_round = [
            real.load.rate / bare.load.rate
            for real, bare in zip(by_name[level], by_name["bare"], strict=True)
        ]
        ratios[level] = median(per_round)
        quiet = [
            real.load.rate / bare.load.rate
            for real, bare in zip(by_name[level], by_name["bare"], strict=True)
            if max(real.others, bare.others) < QUIET_CORES
        ]
        print(line(level, f"receiver {level}" if level in levels else level))
        print(
            f"  {'':<18} ratio to bare: {ratios[level]:.2f} (median of rounds: "
            f"{' '.join(f'{x:.2f}' for x in per_round)}); quiet rounds only: "
            + (f"{median(quiet):.2f} ({len(quiet)})" if quiet else "none")
            + f"; server CPU per request ratio "
            f"{cpu_per_request('bare') / cpu_per_request(level):.2f}"
        )
    headline = levels[0]
    met = ratios[headline] >= TARGET_RATIO
    print(
        f"ratio receiver/bare Flask at LOG_LEVEL={headline}: {ratios[headline]:.2f} -> target "
        f">= {TARGET_RATIO} {'MET' if met else 'NOT MET'}"
    )
    return 0


if __name__ == "__main__":
    run_main(main)
