"""Inbox events processed per second by 2 worker processes, against one RQ job per event.

Target: 2 ``python -m workers`` processes apply at least 1,000 events/s.

Run from the repository root::

    python -m perf.workers                      # ~1.5 min with the defaults
    python -m perf.workers --events 40000 --rounds 1 --levels INFO
    python -m perf.workers --order shuffle      # a company's events spread out

The real design (``workers/jobs.py``): a private Redis (never the shared 6379)
and 2 ``python -m workers`` processes configured like tests/conftest.py's
``stack_env`` (``LOG_LEVEL`` as given, INFO being production's). Once both
are registered and idle (their start-up drain jobs have found the inbox
empty), the inbox is filled with ``--events`` events through ``Inbox.accept``
(the receiver's own call, one per event; it queues no drain job): complete
lifecycles of many companies (``tests.support.lifecycles.build``, every kind in
turn), in the order they were generated, companies starting ``--stagger``
seconds apart so that their events interleave (``--order shuffle``: random
order instead). Then 2 drain jobs are enqueued with
``workers.scheduling.enqueue_drain``, one per worker.

Measured: from that enqueue (both workers are already running and waiting, so
process start-up is excluded; the first entry is read within milliseconds,
and the report says how many) until the inbox is empty (``XLEN`` 0: an entry
is deleted in the transaction that commits its company's state), polled every
10 ms. Afterwards every company's stored state must equal the state ``build``
says its lifecycle ends in, the dead-letter stream must be empty and no RQ job
may have failed; otherwise the run is FAILED (no rate, exit status 1).

Baseline, same run: the design this replaces, one RQ job per event.
``--baseline-events`` jobs of ``perf.noop.noop(body)`` (the event body as the
argument, RQ's default result TTL) are enqueued, then 2 ``rq worker -w
rq.worker.SimpleWorker --burst`` processes drain them at the headline log
level. Measured from the job records: from the moment both workers have
started a job (the later of their first ``started_at``, so neither process's
start-up counts) to the last ``ended_at``, counting the jobs started in that
window. The jobs do nothing, so this is an upper bound for that design.

Runs alternate (baseline, real at each level; mirrored every other round) and
the report gives the median events/s per configuration, worker and Redis CPU
per event for the real design (less noise-sensitive than a rate on a shared
machine; each real run also says how many cores other processes kept busy
meanwhile, "others"), the write conflicts the workers logged (INFO only:
``company.write_conflict``, a batch re-applied), the ratio real/baseline, the
effect of logging at INFO, and whether the 1,000/s target is met.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis as redis_lib
from rq import Queue, Worker
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry
from rq.utils import utcparse

from codat_authflow.jobs import enqueue_drain
from codat_authflow.storage.companies import CompanyStore
from codat_authflow.storage.inbox import Inbox
from codat_authflow.storage.keys import INBOX_GROUP, Keys
from perf.support import (
    app_env,
    code_version,
    cpu_seconds,
    machine_busy_seconds,
    median,
    own_cpu_seconds,
    run_main,
)
from tests.support.lifecycles import LIFECYCLES, build
from tests.support.processes import Process, RedisServer, start_redis, start_rq_workers
from tests.support.signing import encode_body

TARGET_EVENTS_PER_SECOND = 1_000
QUEUE = "authflow"  # Settings.queue_name's default
NAIVE_QUEUE = "bench-naive"
WORKERS = 2
KEYS = Keys("authflow")
STARTED = time.monotonic()


@dataclass
class Dataset:
    deliveries: list[tuple[str, bytes]]  # (webhook id, body) in inbox order
    expected: dict[str, str]  # company id -> the state its lifecycle ends in


@dataclass
class Run:
    name: str  # "naive", "INFO", "WARNING"
    round: int
    events: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    worker_cpu: float | None = None
    redis_cpu: float | None = None
    others: float | None = None  # cores kept busy by other processes meanwhile

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def build_dataset(events: int, stagger: float, order: str, seed: int) -> Dataset:
    """Whole lifecycles of new companies until there are at least `events` events."""
    kinds = sorted(LIFECYCLES)
    base = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    stamped: list[tuple[str, int, str, bytes]] = []
    expected: dict[str, str] = {}
    for index in range(events):  # every lifecycle has >= 1 event: bounded
        if len(stamped) >= events:
            break
        life, state = build(
            kinds[index % len(kinds)], start=base + timedelta(seconds=stagger * index)
        )
        expected[life.company_id] = state
        for body in life.events:
            webhook_id = f"msg_{uuid.uuid4().hex}"
            stamped.append((body["generatedDate"], len(stamped), webhook_id, encode_body(body)))
    if order == "shuffle":
        random.Random(seed).shuffle(stamped)
    else:
        stamped.sort()
    return Dataset([(webhook_id, raw) for _, _, webhook_id, raw in stamped], expected)


def prefill(conn: redis_lib.Redis, dataset: Dataset) -> None:
    """Store every delivery with the receiver's own call, ``Inbox.accept``
    (one round trip each; it queues no drain job, so idle workers stay idle)."""
    inbox = Inbox(conn, KEYS)
    received_at = int(time.time() * 1000)
    for webhook_id, raw in dataset.deliveries:
        if not inbox.accept(webhook_id, raw, received_at).queued:
            raise RuntimeError(f"Inbox.accept refused the unique webhook id {webhook_id}")


def wait_idle(
    conn: redis_lib.Redis, procs: list[Process], queue_name: str, timeout: float = 60.0
) -> None:
    """Until all `procs` are registered RQ workers, idle, with nothing queued or running."""
    queue = Queue(queue_name, connection=conn)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = [p for p in procs if not p.is_running()]
        if dead:
            raise RuntimeError(f"{dead[0].describe()}\n{dead[0].output_tail(20)}")
        workers = Worker.all(connection=conn, queue=queue)
        if (
            len(workers) == len(procs)
            and all(w.get_state() == "idle" for w in workers)
            and queue.count == 0
            and StartedJobRegistry(queue=queue).count == 0
        ):
            return
        time.sleep(0.05)
    raise RuntimeError(f"workers not idle within {timeout:.0f}s: {[p.describe() for p in procs]}")


def verify_companies(conn: redis_lib.Redis, expected: dict[str, str]) -> list[str]:
    """Every company's stored state must be the one its lifecycle ends in."""
    store = CompanyStore(conn, KEYS)
    wrong, missing = [], 0
    for company_id, state in expected.items():
        record = store.get(company_id)
        if record is None:
            missing += 1
        elif record.state.value != state:
            wrong.append(f"{company_id}: {record.state.value} != {state}")
    problems = []
    if missing:
        problems.append(f"{missing} of {len(expected)} companies never stored")
    if wrong:
        problems.append(f"{len(wrong)} companies in the wrong state, e.g. {wrong[:3]}")
    return problems


def run_real(
    level: str,
    round_no: int,
    dataset: Dataset,
    server: RedisServer,
    conn: redis_lib.Redis,
    log_dir: Path,
    timeout: float,
) -> Run:
    run = Run(level, round_no, events=len(dataset.deliveries))
    conn.flushall()
    procs = start_rq_workers(
        app_env(server.url, level), WORKERS, log_dir=log_dir / f"{level}-{round_no}"
    )
    try:
        wait_idle(conn, procs, QUEUE)
        prefill(conn, dataset)
        if conn.xlen(KEYS.inbox) != run.events:
            run.problems.append(f"pre-fill stored {conn.xlen(KEYS.inbox)} of {run.events}")
            return run
        pids = [p.pid for p in procs]
        cpu_workers, cpu_redis = cpu_seconds(pids), cpu_seconds([server.pid or 0])
        busy, own = machine_busy_seconds(), own_cpu_seconds()
        started = time.monotonic()
        for _ in range(WORKERS):
            enqueue_drain(conn, QUEUE)
        first_read = None
        deadline = started + timeout
        while True:  # bounded by `deadline`
            now = time.monotonic()
            if first_read is None:
                groups = conn.xinfo_groups(KEYS.inbox)
                if any(g["last-delivered-id"] not in (b"0-0", "0-0") for g in groups):
                    first_read = now
            if conn.xlen(KEYS.inbox) == 0:
                break
            if now > deadline or not all(p.is_running() for p in procs):
                left = conn.xlen(KEYS.inbox)
                run.problems.append(
                    f"inbox not empty after {now - started:.0f}s ({left} left); "
                    + "; ".join(p.describe() for p in procs)
                )
                return run
            time.sleep(0.002 if first_read is None else 0.01)
        run.seconds = time.monotonic() - started
        run.worker_cpu = cpu_seconds(pids) - cpu_workers
        run.redis_cpu = cpu_seconds([server.pid or 0]) - cpu_redis
        ours = run.worker_cpu + run.redis_cpu + own_cpu_seconds() - own
        run.others = max(0.0, machine_busy_seconds() - busy - ours) / run.seconds
        if first_read is not None:
            run.notes.append(f"first read +{(first_read - started) * 1000:.0f} ms")
        wait_idle(conn, procs, QUEUE)
        queue = Queue(QUEUE, connection=conn)
        failed = FailedJobRegistry(queue=queue).count
        if failed:
            run.problems.append(f"{failed} drain job(s) failed")
        pending = conn.xpending(KEYS.inbox, INBOX_GROUP)["pending"]
        if pending:
            run.problems.append(f"{pending} entries still pending")
        dead = conn.xlen(KEYS.dead_letters)
        if dead:
            run.problems.append(f"{dead} entries dead-lettered")
        run.problems += verify_companies(conn, dataset.expected)
        run.notes.append(f"{FinishedJobRegistry(queue=queue).count} drain jobs")
    finally:
        for proc in procs:
            proc.stop()
    conflicts = sum(
        proc.stdout_path.read_text(errors="replace").count("company.write_conflict")
        for proc in procs
    )
    if level in ("DEBUG", "INFO"):
        run.notes.append(f"{conflicts} write conflicts")
    return run


def run_naive(
    level: str,
    round_no: int,
    bodies: list[bytes],
    server: RedisServer,
    conn: redis_lib.Redis,
    log_dir: Path,
    timeout: float,
) -> Run:
    run = Run("naive", round_no)
    conn.flushall()
    queue = Queue(NAIVE_QUEUE, connection=conn)
    job_ids: list[str] = []
    for start in range(0, len(bodies), 500):
        with conn.pipeline() as pipe:
            jobs = queue.enqueue_many(
                [
                    Queue.prepare_data("perf.noop.noop", args=(b,))
                    for b in bodies[start : start + 500]
                ],
                pipeline=pipe,
            )
            pipe.execute()
        job_ids += [job.id for job in jobs]
    if queue.count != len(bodies):
        run.problems.append(f"enqueued {queue.count} of {len(bodies)} jobs")
        return run
    cpu_redis = cpu_seconds([server.pid or 0])
    args = ["worker", "-w", "rq.worker.SimpleWorker", "--burst", "--url", server.url]
    args += ["--logging_level", level, NAIVE_QUEUE]
    procs = start_rq_workers(
        app_env(server.url, level), WORKERS, module="rq.cli", args=args,
        log_dir=log_dir / f"naive-{round_no}",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        for proc in procs:
            proc.popen.wait(max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired as exc:
        run.problems.append(f"burst workers did not finish: {exc!r}")
        return run
    finally:
        for proc in procs:
            proc.stop()
    run.redis_cpu = cpu_seconds([server.pid or 0]) - cpu_redis
    bad = [p.describe() for p in procs if p.returncode != 0]
    if bad:
        run.problems.append(f"burst workers exited with errors: {bad}")
    spans: list[tuple[float, float, str]] = []
    statuses: dict[bytes, int] = {}
    for start in range(0, len(job_ids), 1000):
        with conn.pipeline(transaction=False) as pipe:
            for job_id in job_ids[start : start + 1000]:
                pipe.hmget(f"rq:job:{job_id}", "started_at", "ended_at", "worker_name", "status")
            for started_at, ended_at, worker, status in pipe.execute():
                statuses[status] = statuses.get(status, 0) + 1
                if started_at and ended_at:
                    spans.append(
                        (
                            utcparse(started_at.decode()).timestamp(),
                            utcparse(ended_at.decode()).timestamp(),
                            worker.decode(),
                        )
                    )
    if statuses.get(b"finished", 0) != len(job_ids):
        run.problems.append(f"job statuses: {statuses}")
        return run
    first_by_worker: dict[str, float] = {}
    for started_at, _, worker in spans:
        first_by_worker[worker] = min(started_at, first_by_worker.get(worker, started_at))
    both_running = max(first_by_worker.values())
    window = [span for span in spans if span[0] >= both_running]
    run.events = len(window)
    run.seconds = max(end for _, end, _ in spans) - both_running
    skew = both_running - min(first_by_worker.values())
    run.notes.append(
        f"{len(first_by_worker)} workers, 2nd started {skew * 1000:.0f} ms after the 1st; "
        f"{len(window)} of {len(spans)} jobs in the window"
    )
    return run


def describe(run: Run, label: str) -> str:
    head = f"  round {run.round}  {label:<24}"
    if run.problems:
        return head + " FAILED: " + "; ".join(run.problems)
    cpu = []
    if run.worker_cpu is not None:
        cpu.append(f"workers {run.worker_cpu * 1000 / run.events:.2f}")
    if run.redis_cpu is not None:
        cpu.append(f"redis {run.redis_cpu * 1000 / max(run.events, 1):.2f}")
    others = f"others {run.others:.1f} cores; " if run.others is not None else ""
    return (
        f"{head} {run.rate:7,.0f} events/s  ({run.events:,} in {run.seconds:.2f} s; "
        f"CPU ms/event {' + '.join(cpu)}; {others}{'; '.join(run.notes)})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m perf.workers", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--events", type=int, default=20_000, help="inbox events (20000)")
    parser.add_argument(
        "--baseline-events", type=int, default=4_000, help="one-job-per-event jobs (4000)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="runs per configuration (3)")
    parser.add_argument(
        "--levels",
        default="INFO,WARNING",
        help="worker LOG_LEVELs; the first is the headline and the baseline's (INFO,WARNING)",
    )
    parser.add_argument(
        "--stagger", type=float, default=1.0, help="seconds between company starts (1.0)"
    )
    parser.add_argument("--order", choices=["time", "shuffle"], default="time")
    parser.add_argument("--seed", type=int, default=1128)
    parser.add_argument("--timeout", type=float, default=120.0, help="limit per run, seconds")
    args = parser.parse_args(argv)
    levels = [level.strip().upper() for level in args.levels.split(",") if level.strip()]
    if not levels or args.rounds < 1 or args.events < 1 or args.baseline_events < 1:
        parser.error("need a level, a round and some events")

    log_dir = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    dataset = build_dataset(args.events, args.stagger, args.order, args.seed)
    naive_bodies = [raw for _, raw in dataset.deliveries[: args.baseline_events]]
    print("workers benchmark: inbox events processed per second by 2 worker processes")
    print(
        f"  real: {len(dataset.deliveries):,} events of {len(dataset.expected):,} companies "
        f"({args.order} order, stagger {args.stagger:g} s), 2 x python -m workers, "
        f"from enqueueing 2 drain jobs to idle workers until XLEN inbox == 0"
    )
    print(
        f"  baseline: {len(naive_bodies):,} RQ jobs perf.noop.noop(body), 2 x rq worker "
        f"SimpleWorker --burst at {levels[0]}, from both workers busy to the last job's end"
    )
    print(f"  code: {code_version()}; process logs: {log_dir}")
    runs: list[Run] = []
    with start_redis() as server:
        conn = redis_lib.Redis.from_url(server.url)
        print(
            f"  redis {conn.info('server').get('redis_version', '?')} (private, pid {server.pid})"
        )
        try:
            names = ["naive", *levels]
            for round_no in range(1, args.rounds + 1):
                for name in names if round_no % 2 else names[::-1]:
                    if name == "naive":
                        run = run_naive(
                            levels[0], round_no, naive_bodies, server, conn, log_dir, args.timeout
                        )
                        label = f"one RQ job/event {levels[0]}"
                    else:
                        run = run_real(name, round_no, dataset, server, conn, log_dir, args.timeout)
                        label = f"drain jobs {name}"
                    runs.append(run)
                    print(describe(run, label), flush=True)
        finally:
            conn.close()
    return report(runs, levels)


def report(runs: list[Run], levels: list[str]) -> int:
    if any(run.problems for run in runs):
        print("\n!!! FAILED: a run had errors or wrong results (see above); no rate is reported.")
        return 1
    by_name: dict[str, list[Run]] = {}
    for run in runs:
        by_name.setdefault(run.name, []).append(run)

    def cpu(name: str, attribute: str) -> float:
        values = [getattr(r, attribute) / r.events for r in by_name[name] if getattr(r, attribute)]
        return median(values) * 1000 if values else float("nan")

    rate = {name: median(r.rate for r in group) for name, group in by_name.items()}
    naive = rate["naive"]
    print(
        f"\nmedians of {len(by_name['naive'])} rounds ({time.monotonic() - STARTED:.0f} s in all):"
    )
    print(f"  {'':<24} {'events/s':>9} {'CPU ms/event: workers':>22} {'redis':>6}")
    print(
        f"  {'one RQ job/event ' + levels[0]:<24} {naive:9,.0f} {'n/a':>22} "
        f"{cpu('naive', 'redis_cpu'):6.2f}"
    )
    for level in levels:
        print(
            f"  {'drain jobs ' + level:<24} {rate[level]:9,.0f} {cpu(level, 'worker_cpu'):22.2f} "
            f"{cpu(level, 'redis_cpu'):6.2f}   {rate[level] / naive:.1f}x one job/event"
        )
    if len(levels) > 1:
        low, high = levels[1], levels[0]
        print(
            f"  logging at {high} vs {low}: {rate[high] / rate[low] - 1:+.0%} events/s, "
            f"{cpu(high, 'worker_cpu') / cpu(low, 'worker_cpu') - 1:+.0%} worker CPU per event "
            "(the CPU figure is the less noisy one)"
        )
    headline = rate[levels[0]]
    met = headline >= TARGET_EVENTS_PER_SECOND
    print(
        f"drain at LOG_LEVEL={levels[0]}: {headline:,.0f} events/s = {headline / naive:.1f}x one "
        f"RQ job per event -> target {TARGET_EVENTS_PER_SECOND:,}/s {'MET' if met else 'NOT MET'}"
    )
    return 0


if __name__ == "__main__":
    run_main(main)
