"""Soak test: realistic Codat traffic through the real stack, with faults,
checked against an oracle. Library (`run_soak(SoakConfig(...))`, used by
tests/resilience) and CLI (``python -m perf.soak --help``);
docs/resilience.md describes the invariants and the results.

What one run does
-----------------
1. Starts a private, persistent Redis (AOF, ``appendfsync everysec``,
   ``maxmemory-policy noeviction``), gunicorn (4 workers by default), RQ
   worker pools (``python -m workers --queues inbox`` / ``deliveries``, or
   the Procfile's mixed ``python -m workers`` with ``--rq-workers``), the
   clock (``python -m workers.clock``) and a local subscriber
   (tests/support/subscriber.py) that verifies every request with
   ``standardwebhooks``; subscribes it to every notification.
2. Builds N companies with realistic mixed lifecycles (tests/support/lifecycles.py:
   ready, failed then linked, revoked after ready, reconnected, several
   banking connections, company deleted, ...). Every event gets a Svix
   message id and is delivered 1 to 3 times; the deliveries are laid out in
   time, shuffled within windows and posted concurrently, spread over
   ``--duration`` seconds, each signed by the ``svix`` library at send time.
   Like Codat, the poster re-sends with the same ``webhook-id`` until it gets
   a 2xx (bounded).
3. While it posts: SIGKILLs a worker every ``--kill-every`` seconds (and
   starts a replacement, as a process supervisor would), restarts Redis at
   ``--redis-restart-at`` seconds (graceful; or ``--redis-crash``: SIGKILL and
   the last ``--lose-seconds`` of the AOF cut off, as a host crash would),
   makes the subscriber answer 500, hang or go down during
   ``--subscriber-faults`` windows. Any process that exits without being
   killed is reported, then restarted.
4. Waits until the system is quiet, then checks the invariants (see
   `SoakRun.verify`) and measures Redis commands (and Redis CPU) per event
   from INFO commandstats deltas, summed across Redis restarts, net of the
   idle background rate and of the harness's own commands.

``--cost-model`` instead measures each unit of work alone (docs/scaling.md).

The report is printed; the exit status is 1 if any invariant broke.

Everything runs on loopback, on free ports, in a data dir of its own (a temp
dir unless ``--data-dir``), which keeps the process logs and the AOF. It
never touches a Redis on 6379. Every loop is bounded in time.

Processes are started and stopped from the thread that calls `run_soak`
(PR_SET_PDEATHSIG ties each child to the thread that started it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import redis as redis_lib
from redis.exceptions import RedisError
from rq import Queue, Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from codat_authflow.storage.companies import CompanyStore
from codat_authflow.storage.deliveries import Delivery
from codat_authflow.storage.keys import Keys
from state_machine import CompanyFacts, apply_events, parse_codat_event
from state_machine.notifications import notification_id
from tests.support.lifecycles import LIFECYCLES, build
from tests.support.processes import (
    TEST_API_TOKEN,
    TEST_WEBHOOK_SECRET,
    Process,
    app_env,
    start_gunicorn,
    start_process,
)
from tests.support.redis_server import start_redis_server
from tests.support.signing import encode_body, signed_headers
from tests.support.subscriber import Subscriber

PREFIX = "authflow"
QUEUE = "authflow"
DELIVERY_QUEUE = "authflow-deliveries"
AUTH = {"Authorization": f"Bearer {TEST_API_TOKEN}"}

# The mix of lifecycles: every kind tests.support.lifecycles knows, the ones the
# issue names weighted up (ready, failed then linked, revoked after ready,
# reconnected, several banking connections, company deleted).
DEFAULT_MIX = {
    "happy_path": 3,
    "failed_then_linked": 2,
    "revoked_after_ready": 2,
    "reconnected": 2,
    "several_banking": 2,
    "company_deleted": 2,
    "connection_deleted": 1,
    "failed_only": 1,
    "linked_waiting_for_sync": 1,
    "syncing": 1,
}

CRON_FUNCTIONS = ("workers.scheduling.sweep", "workers.reconcile.reconcile_due_companies")
POST_TIMEOUT_SECONDS = 10.0
POST_GIVE_UP_SECONDS = 120.0  # per delivery, like a (much shortened) Codat retry schedule
POST_MAX_ATTEMPTS = 200
LOOP_TICK_SECONDS = 0.2


# -- configuration ---------------------------------------------------------------


@dataclass(frozen=True)
class SubscriberFault:
    mode: str  # fail | hang | down
    at: float  # seconds after posting starts
    length: float

    @classmethod
    def parse(cls, text: str) -> SubscriberFault:
        """``mode@start+length``, e.g. ``hang@40+4``."""
        try:
            mode, _, rest = text.partition("@")
            start, _, length = rest.partition("+")
            fault = cls(mode.strip(), float(start), float(length))
        except ValueError as exc:
            raise ValueError(f"subscriber fault {text!r}: expected mode@start+length") from exc
        if fault.mode not in ("fail", "hang", "down") or fault.length <= 0:
            raise ValueError(f"subscriber fault {text!r}: mode is fail|hang|down, length > 0")
        return fault


@dataclass(frozen=True)
class SoakConfig:
    companies: int = 200
    duration: float = 20.0  # seconds over which the deliveries are posted
    seed: int = 1
    max_copies: int = 3  # each event delivered 1..max_copies times
    window: int = 64  # deliveries shuffled within windows of this size
    concurrency: int = 16  # posting threads
    web_workers: int = 4
    rq_workers: int = 0  # `python -m workers`: both queues (the Procfile's default)
    inbox_workers: int = 2  # `python -m workers --queues inbox`
    delivery_workers: int = 1  # `python -m workers --queues deliveries`
    kill_every: float | None = None  # SIGKILL a worker this often (seconds)
    kill_from: float = 1.0
    kill_until: float | None = None  # default: when posting ends
    redis_restarts: tuple[float, ...] = ()
    redis_crash: bool = False  # SIGKILL Redis instead of a graceful restart, and ...
    lose_seconds: float = 1.0  # ... drop this much of the AOF's tail: a host crash
    subscriber_faults: tuple[SubscriberFault, ...] = ()
    hang_seconds: float = 12.0  # longer than the sender's 10 s timeout
    event_types: tuple[str, ...] = ("*",)
    mix: tuple[tuple[str, int], ...] = tuple(DEFAULT_MIX.items())
    settle_timeout: float = 240.0
    allow_dead_letters: bool = False
    data_dir: Path | None = None
    log_level: str = "INFO"
    env: tuple[tuple[str, str], ...] = ()  # extra environment for the stack
    idle_sample_seconds: float = 5.0  # measuring the idle background rate of Redis commands
    verbose: bool = True

    def with_data_dir(self, path: Path) -> SoakConfig:
        return replace(self, data_dir=path)


def stack_environment(redis_url: str, extra: Iterable[tuple[str, str]] = ()) -> dict[str, str]:
    """The processes' environment: ours (minus app configuration) plus a
    production configuration with short timings, so faults heal in seconds."""
    env = app_env(
        redis_url,
        KEY_PREFIX=PREFIX,
        RQ_QUEUE=QUEUE,
        RQ_DELIVERY_QUEUE=DELIVERY_QUEUE,
        ALLOW_PRIVATE_SUBSCRIBER_URLS="1",
        DELIVERY_RETRY_SCHEDULE="0,1,2,4,8",
        INBOX_VISIBILITY_TIMEOUT_SECONDS="5",
        RQ_MAINTENANCE_INTERVAL_SECONDS="2",
        SWEEP_INTERVAL_SECONDS="1",
        DRAIN_MAX_SECONDS="10",
        COMPANY_EVENT_LOG_LIMIT="200",  # every event kept: the exactly-once check reads it
        PYTHONUNBUFFERED="1",
    )
    env.update(dict(extra))
    return env


# -- the traffic -----------------------------------------------------------------


@dataclass(frozen=True)
class CompanyPlan:
    company_id: str
    kind: str
    expected_state: str
    bodies: tuple[dict[str, Any], ...]
    webhook_ids: tuple[str, ...]


@dataclass(frozen=True)
class Post:
    webhook_id: str
    company_id: str
    body: bytes
    copy: int  # 0: the first delivery of this message, 1+: a duplicate


@dataclass
class Plan:
    companies: list[CompanyPlan]
    posts: list[Post]

    @property
    def messages(self) -> int:
        return sum(len(c.webhook_ids) for c in self.companies)


def plan_traffic(config: SoakConfig) -> Plan:
    """Companies, their events, and the order in which Codat delivers them.

    Each company starts at a random point of the run and its events follow
    one another; every event is delivered 1..max_copies times (duplicates
    arrive a little later, as Codat's retries do); the resulting time line is
    then shuffled within windows of ``window`` deliveries."""
    rng = random.Random(config.seed)
    kinds = [kind for kind, weight in config.mix for _ in range(weight)]
    unknown = sorted(set(kinds) - set(LIFECYCLES))
    if unknown:
        raise ValueError(f"unknown lifecycle kinds {unknown}; known: {sorted(LIFECYCLES)}")
    companies: list[CompanyPlan] = []
    timed: list[tuple[float, int, Post]] = []
    for index in range(config.companies):
        kind = kinds[index % len(kinds)] if index < len(kinds) else rng.choice(kinds)
        life, expected = build(kind, company_name=f"Soak company {index}")
        start = rng.random()
        gap = rng.uniform(0.002, 0.03)
        webhook_ids = []
        for n, body in enumerate(life.events):
            webhook_id = f"msg_{rng.getrandbits(96):024x}"
            webhook_ids.append(webhook_id)
            raw = encode_body(body)
            at = start + n * gap
            for copy in range(rng.randint(1, config.max_copies)):
                when = at + (rng.uniform(0.0, 0.05) if copy else 0.0)
                timed.append((when, len(timed), Post(webhook_id, life.company_id, raw, copy)))
        companies.append(
            CompanyPlan(life.company_id, kind, expected, tuple(life.events), tuple(webhook_ids))
        )
    timed.sort()
    posts = [post for _, _, post in timed]
    window = max(1, config.window)
    for begin in range(0, len(posts), window):
        chunk = posts[begin : begin + window]
        rng.shuffle(chunk)
        posts[begin : begin + window] = chunk
    return Plan(companies, posts)


@dataclass
class PostOutcome:
    webhook_id: str
    copy: int
    status: int | None  # the final answer (200/202), or the last one if we gave up
    attempts: int
    retried_statuses: tuple[str, ...]  # answers that made us retry (503, timeouts...)
    acked_at: float | None  # monotonic time of the 2xx


class Poster:
    """Posts the plan's deliveries like Codat (Svix) does: signed at send
    time, re-sent with the same webhook-id until a 2xx, spread over
    ``duration`` seconds by ``concurrency`` threads."""

    def __init__(self, base_url: str, secret: str, concurrency: int, duration: float):
        self.base_url = base_url
        self.secret = secret
        self.concurrency = concurrency
        self.duration = duration
        self.outcomes: list[PostOutcome] = []
        self._lock = threading.Lock()
        self._next = 0
        self.done = threading.Event()
        self.started_at = 0.0
        self.finished_at = 0.0
        self.stop = threading.Event()

    def start(self, posts: Sequence[Post]) -> threading.Thread:
        thread = threading.Thread(target=self._run, args=(posts,), name="soak-poster", daemon=True)
        self.started_at = time.monotonic()
        thread.start()
        return thread

    def _run(self, posts: Sequence[Post]) -> None:
        interval = self.duration / max(1, len(posts))
        try:
            with ThreadPoolExecutor(self.concurrency, thread_name_prefix="soak-post") as pool:
                for _ in range(self.concurrency):
                    pool.submit(self._worker, posts, interval)
        finally:
            self.finished_at = time.monotonic()
            self.done.set()

    def _take(self, total: int) -> int | None:
        with self._lock:
            if self._next >= total:
                return None
            index = self._next
            self._next += 1
            return index

    def _worker(self, posts: Sequence[Post], interval: float) -> None:
        with httpx.Client(
            base_url=self.base_url, timeout=POST_TIMEOUT_SECONDS, trust_env=False
        ) as client:
            while not self.stop.is_set():
                index = self._take(len(posts))
                if index is None:
                    return
                delay = self.started_at + index * interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                outcome = self._post(client, posts[index])
                with self._lock:
                    self.outcomes.append(outcome)

    def _post(self, client: httpx.Client, post: Post) -> PostOutcome:
        give_up_at = time.monotonic() + POST_GIVE_UP_SECONDS
        pause = 0.1
        retried: list[str] = []
        status: int | None = None
        for attempt in range(1, POST_MAX_ATTEMPTS + 1):
            headers = signed_headers(self.secret, post.body, webhook_id=post.webhook_id)
            try:
                status = client.post(
                    "/webhooks/codat", content=post.body, headers=headers
                ).status_code
            except httpx.HTTPError as exc:
                status = None
                retried.append(type(exc).__name__)
            else:
                if status in (200, 202):
                    return PostOutcome(
                        post.webhook_id,
                        post.copy,
                        status,
                        attempt,
                        tuple(retried),
                        time.monotonic(),
                    )
                retried.append(str(status))
                if 400 <= status < 500 and status not in (408, 429):
                    break  # our deliveries are valid: a 4xx is a bug, retrying will not help
            if time.monotonic() > give_up_at or self.stop.is_set():
                break
            time.sleep(pause)
            pause = min(pause * 2, 2.0)
        return PostOutcome(post.webhook_id, post.copy, status, attempt, tuple(retried), None)


# -- the stack and its faults ------------------------------------------------------


@dataclass
class ProcessExit:
    name: str
    pid: int
    returncode: int | None
    at: float  # seconds after posting started
    near_redis_restart: bool  # within 10 s of one
    last_lines: str


@dataclass
class AbandonedJob:
    job_id: str
    queue: str
    function: str
    killed_at: float  # monotonic
    retries_left: int | None
    outcome: str = "pending"  # pending | handed_back | failed | vanished
    seen: list[str] = field(default_factory=list)
    resolved_after: float | None = None  # seconds from the kill to the hand-back


class Stack:
    """The application's processes, managed from one thread (the one that
    constructs it): PR_SET_PDEATHSIG ties every child to the thread that
    started it, so starting them elsewhere would kill them with that thread."""

    def __init__(self, env: dict[str, str], log_dir: Path, web_workers: int, pools: dict[str, int]):
        self.env = env
        self.log_dir = log_dir
        self.web_workers = web_workers
        self.serial = 0
        self.workers: list[Process] = []
        self.roles: dict[int, str] = {}  # pid -> the --queues the worker was started with
        self.web = start_gunicorn(env, workers=web_workers, log_dir=log_dir, name="gunicorn-0")
        self.port = int((self.web.url or "").rsplit(":", 1)[1])
        for role, count in pools.items():
            for _ in range(count):
                self.start_worker(role)
        self.clock = self._start_clock()
        self.expected_dead: set[int] = set()
        self.exits: list[ProcessExit] = []
        self.restarts = 0

    @property
    def base_url(self) -> str:
        return self.web.url or ""

    def _name(self, role: str) -> str:
        self.serial += 1
        return f"{role}-{self.serial}"

    def start_worker(self, role: str = "inbox,deliveries") -> Process:
        """`python -m workers --queues ROLE`; the default is the Procfile's (both)."""
        argv = [sys.executable, "-m", "workers"]
        if role != "inbox,deliveries":
            argv += ["--queues", role]
        process = start_process(argv, self.env, name=self._name("worker"), log_dir=self.log_dir)
        self.workers.append(process)
        self.roles[process.pid] = role
        return process

    def _start_clock(self) -> Process:
        return start_process(
            [sys.executable, "-m", "workers.clock"],
            self.env,
            name=self._name("clock"),
            log_dir=self.log_dir,
        )

    def kill_worker(self, process: Process) -> None:
        """SIGKILL (the worker and its scheduler child) and start a replacement."""
        self.expected_dead.add(process.pid)
        process.kill()
        self.workers.remove(process)
        self.start_worker(self.roles[process.pid])

    def supervise(self, now: float, redis_down: bool) -> list[ProcessExit]:
        """`redis_down`: Redis is, or was within the last 10 s, restarting."""
        """Restart whatever died on its own; report each such exit."""
        found = []
        for process in list(self.workers):
            if not process.is_running() and process.pid not in self.expected_dead:
                found.append(self._exit(process, now, redis_down))
                self.workers.remove(process)
                self.start_worker(self.roles[process.pid])
        if not self.clock.is_running():
            found.append(self._exit(self.clock, now, redis_down))
            self.clock = self._start_clock()
        if not self.web.is_running():
            found.append(self._exit(self.web, now, redis_down))
            self.web = start_gunicorn(
                self.env,
                workers=self.web_workers,
                port=self.port,
                log_dir=self.log_dir,
                name=self._name("gunicorn"),
            )
        self.exits.extend(found)
        self.restarts += len(found)
        return found

    @staticmethod
    def _exit(process: Process, now: float, redis_down: bool) -> ProcessExit:
        """Why it exited, from its last log lines: RQ's own last words and the
        exception, without the traceback's frames."""
        reasons = []
        for line in (process.stdout_tail(400) + "\n" + process.stderr_tail(40)).splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                if line[:1].isalpha() and ("Error" in line or "Exception" in line):
                    reasons.append(line.strip())
                continue
            if isinstance(entry, dict) and entry.get("level") in ("error", "critical"):
                exception = (entry.get("exception") or "").strip().splitlines()
                reasons.append(
                    str(entry.get("event"))[:160] + (f" <- {exception[-1]}" if exception else "")
                )
        return ProcessExit(
            process.name,
            process.pid,
            process.returncode,
            round(now, 1),
            redis_down,
            " | ".join(reasons[-2:])[-600:],
        )

    def stop(self) -> None:
        for process in [self.clock, *self.workers, self.web]:
            with contextlib.suppress(Exception):
                process.stop(10)


class CountingRedis(redis_lib.Redis):
    """The harness's own connection. It counts the commands it sends, so
    that they can be taken out of the server's INFO commandstats."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.counts: Counter[str] = Counter()

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.counts[str(args[0]).lower()] += 1
        return super().execute_command(*args, **options)


CPU_MS = "_cpu_ms"  # not a command: Redis's own CPU time, kept alongside the counts


def commandstats(conn: redis_lib.Redis) -> Counter[str]:
    """Calls per command since Redis started, plus its CPU time in ms (CPU_MS)."""
    stats = conn.info("commandstats")
    counts = Counter(
        {name.removeprefix("cmdstat_"): int(values["calls"]) for name, values in stats.items()}
    )
    cpu = conn.info("cpu")
    counts[CPU_MS] = int((float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])) * 1000)
    return counts


# -- the run ---------------------------------------------------------------------


@dataclass
class SoakReport:
    config: dict[str, Any]
    ok: bool
    violations: list[str]
    figures: dict[str, Any]
    findings: list[str]
    data_dir: str

    def text(self) -> str:
        lines = [f"soak: {'PASS' if self.ok else 'FAIL'}  (data and logs: {self.data_dir})"]
        for key, value in self.figures.items():
            if isinstance(value, dict):
                lines.append(f"  {key}:")
                for sub, subvalue in value.items():
                    lines.append(f"    {sub}: {subvalue}")
            else:
                lines.append(f"  {key}: {value}")
        if self.findings:
            lines.append("findings:")
            lines += [f"  - {finding}" for finding in self.findings]
        if self.violations:
            lines.append(f"INVARIANTS BROKEN ({len(self.violations)}):")
            lines += [f"  ! {violation}" for violation in self.violations]
        else:
            lines.append("all invariants hold")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=str)


class SoakRun:
    def __init__(self, config: SoakConfig):
        self.config = config
        self.data_dir = (
            Path(config.data_dir)
            if config.data_dir
            else Path(tempfile.mkdtemp(prefix="authflow-soak-"))
        )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.violations: list[str] = []
        self.findings: list[str] = []
        self.figures: dict[str, Any] = {}
        self.abandoned: list[AbandonedJob] = []
        self.kills = 0
        self.kills_idle = 0
        self.redis_downtime: list[tuple[float, float]] = []  # (start, seconds), relative
        self.stats_segments: list[Counter[str]] = []
        self.redis_down = False
        self.lost_in_crash: set[str] = set()
        self.crashes: list[tuple[float, float]] = []  # (wall time of the kill, monotonic when back)
        self.aof_samples: list[tuple[float, str, int]] = []
        self.aof_bytes_lost = 0
        self._say_lock = threading.Lock()
        self.not_quiet_reason = "not checked yet"

    def say(self, message: str) -> None:
        if self.config.verbose:
            with self._say_lock:
                print(f"[soak {time.strftime('%H:%M:%S')}] {message}", flush=True)

    # -- orchestration -----------------------------------------------------------

    def run(self) -> SoakReport:
        config = self.config
        started = time.monotonic()
        plan = plan_traffic(config)
        self.say(
            f"plan: {len(plan.companies)} companies, {plan.messages} events, "
            f"{len(plan.posts)} deliveries over {config.duration:.0f}s; data in {self.data_dir}"
        )
        server = start_redis_server(
            self.data_dir / "redis",
            persistent=True,
            extra_args=("--maxmemory-policy", "noeviction"),
        )
        self.server = server
        self.conn = CountingRedis.from_url(server.url, socket_timeout=5, socket_connect_timeout=2)
        env = stack_environment(server.url, (("LOG_LEVEL", config.log_level), *config.env))
        pools = {
            "inbox,deliveries": config.rq_workers,
            "inbox": config.inbox_workers,
            "deliveries": config.delivery_workers,
        }
        stack = Stack(env, self.data_dir / "logs", config.web_workers, pools)
        subscriber = Subscriber()
        try:
            self._subscribe(stack.base_url, subscriber)
            self._wait_for_workers(stack)
            self.figures["startup_seconds"] = round(time.monotonic() - started, 1)
            self._soak(plan, stack, subscriber)
            report = self._finish(plan, stack, subscriber)
        finally:
            stack.stop()
            subscriber.stop()
            server.close()
        self.figures["total_seconds"] = round(time.monotonic() - started, 1)
        report.figures["total_seconds"] = self.figures["total_seconds"]
        return report

    def _subscribe(self, base_url: str, subscriber: Subscriber) -> None:
        if not self.config.event_types:
            self.subscription_id = None
            return
        response = httpx.post(
            f"{base_url}/api/subscriptions",
            headers=AUTH,
            json={"url": subscriber.url, "eventTypes": list(self.config.event_types)},
            trust_env=False,
            timeout=10,
        )
        response.raise_for_status()
        subscriber.set(secret=response.json()["secret"], hang_seconds=self.config.hang_seconds)
        self.subscription_id = response.json()["id"]

    def _wait_for_workers(self, stack: Stack, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(Worker.all(connection=self.conn)) >= len(stack.workers):
                return
            time.sleep(0.2)
        raise RuntimeError(f"RQ workers did not register within {timeout}s: {stack.workers}")

    def _soak(self, plan: Plan, stack: Stack, subscriber: Subscriber) -> None:
        config = self.config
        rng = random.Random(config.seed + 1)
        poster = Poster(stack.base_url, TEST_WEBHOOK_SECRET, config.concurrency, config.duration)
        self.poster = poster
        kill_until = config.kill_until if config.kill_until is not None else config.duration
        next_kill = config.kill_from if config.kill_every else None
        restarts = sorted(config.redis_restarts)
        faults = sorted(config.subscriber_faults, key=lambda f: f.at)
        active_fault: SubscriberFault | None = None
        self._stats_mark()
        own_before = Counter(self.conn.counts)
        samples: list[tuple[float, int]] = []
        t0 = time.monotonic()
        poster.start(plan.posts)
        settle_deadline: float | None = None
        quiet_since: float | None = None
        last_sample = last_check = 0.0
        while True:
            now = time.monotonic() - t0
            # Faults.
            if next_kill is not None and now >= next_kill and now <= kill_until:
                self._kill_one(stack, rng)
                next_kill = now + config.kill_every * rng.uniform(0.7, 1.3)
            if restarts and now >= restarts[0]:
                restarts.pop(0)
                self._restart_redis(now)
            if active_fault and now >= active_fault.at + active_fault.length:
                self.say(f"subscriber back to normal after {active_fault.mode}")
                if active_fault.mode == "down":
                    subscriber.start()
                subscriber.set(mode="ok")
                active_fault = None
            if active_fault is None and faults and now >= faults[0].at:
                active_fault = faults.pop(0)
                self.say(f"subscriber fault: {active_fault.mode} for {active_fault.length}s")
                if active_fault.mode == "down":
                    subscriber.stop()
                else:
                    subscriber.set(mode=active_fault.mode)
            if config.redis_crash and restarts:
                self._sample_aof()
            near_restart = self.redis_down or any(
                at <= now <= at + down + 10 for at, down in self.redis_downtime
            )
            for exit_ in stack.supervise(now, near_restart):
                self.say(
                    f"process {exit_.name} exited on its own (rc {exit_.returncode}); restarted"
                )
            self._watch_abandoned()
            if now - last_sample >= 1.0:
                last_sample = now
                with contextlib.suppress(RedisError):
                    samples.append((round(now, 1), int(self.conn.xlen(f"{PREFIX}:inbox"))))
            late = now > config.duration + POST_GIVE_UP_SECONDS + 60
            if late and not poster.done.is_set() and not poster.stop.is_set():
                poster.stop.set()  # bounded: the receiver never came back
                self.violations.append(f"posting did not finish within {now:.0f}s; stopped")
            # Done posting and no fault left: settle.
            faults_over = not restarts and active_fault is None and not faults
            if poster.done.is_set() and faults_over:
                if settle_deadline is None:
                    settle_deadline = now + config.settle_timeout
                    self.figures["posting_seconds"] = round(
                        poster.finished_at - poster.started_at, 1
                    )
                    self.say(f"posting done in {self.figures['posting_seconds']}s; settling")
                if now - last_check < 1.0:
                    time.sleep(LOOP_TICK_SECONDS)
                    continue
                last_check = now
                reason = self._not_quiet()
                if reason is None:
                    quiet_since = quiet_since if quiet_since is not None else now
                    if now - quiet_since >= 1.0:
                        self.figures["settle_seconds"] = round(
                            now - (poster.finished_at - t0) - 1.0, 1
                        )
                        break
                else:
                    quiet_since = None
                    self.not_quiet_reason = reason
                if now > settle_deadline:
                    self.violations.append(
                        f"not quiet {config.settle_timeout:.0f}s after the last fault: "
                        f"{self.not_quiet_reason}"
                    )
                    break
            time.sleep(LOOP_TICK_SECONDS)
        self._stats_mark()
        self.own_commands = Counter(self.conn.counts) - own_before
        self.soak_seconds = time.monotonic() - t0
        self.figures["inbox_backlog_max"] = max((n for _, n in samples), default=0)
        # The idle background (the clock's sweeps, heartbeats): measured now, subtracted later.
        before, t_idle = commandstats(self.conn), time.monotonic()
        time.sleep(config.idle_sample_seconds)
        idle = commandstats(self.conn) - before
        self.idle_rate = {k: v / (time.monotonic() - t_idle) for k, v in idle.items()}

    # -- faults ------------------------------------------------------------------

    def _kill_one(self, stack: Stack, rng: random.Random) -> None:
        """SIGKILL a worker, preferably one running a job, and start a new one."""
        candidates = [p for p in stack.workers if p.is_running()]
        if not candidates:
            return
        current: dict[int, str | None] = {}
        with contextlib.suppress(RedisError):
            for worker in Worker.all(connection=self.conn):
                current[worker.pid] = worker.get_current_job_id()
        busy = [p for p in candidates if current.get(p.pid)]
        victim = rng.choice(busy or candidates)
        job_id = current.get(victim.pid)
        killed_at = time.monotonic()
        stack.kill_worker(victim)
        self.kills += 1
        if not job_id:
            self.kills_idle += 1
            return
        with contextlib.suppress(RedisError, NoSuchJobError):
            job = Job.fetch(job_id, connection=self.conn)
            if job.get_status(refresh=False) == JobStatus.STARTED:
                self.abandoned.append(
                    AbandonedJob(job_id, job.origin, job.func_name, killed_at, job.retries_left)
                )
                return
        self.kills_idle += 1  # the job finished between our look and the kill

    def _restart_redis(self, now: float) -> None:
        crash = self.config.redis_crash
        mode = (
            f"crash (SIGKILL, last {self.config.lose_seconds}s of AOF lost)"
            if crash
            else "graceful restart"
        )
        self.say(f"Redis {mode}")
        self._stats_mark()
        self.redis_down = True
        began = time.monotonic()
        if crash:
            killed_at = time.time()
            self.server.kill()
            if self.config.lose_seconds > 0:
                self.aof_bytes_lost += self._lose_aof_tail(began - self.config.lose_seconds)
            # Every webhook acknowledged by now was accepted before the crash;
            # _account_for_crash checks which of them survived.
            self.crashes.append((killed_at, time.monotonic()))
            self.server.start()
        else:
            self.server.restart()
        self.redis_down = False
        downtime = time.monotonic() - began
        self.redis_downtime.append((round(now, 1), round(downtime, 2)))
        self._stats_mark(reset=True)
        self.say(f"Redis back after {downtime:.2f}s")

    def _incr_aof(self) -> Path | None:
        """The AOF file Redis appends to now (Redis 7's multi-part AOF)."""
        directory = self.data_dir / "redis" / "appendonlydir"
        try:
            manifest = next(directory.glob("*.manifest")).read_text()
        except (StopIteration, OSError):
            return None
        names = [line.split()[1] for line in manifest.splitlines() if line.endswith("type i")]
        return directory / names[-1] if names else None

    def _sample_aof(self) -> None:
        path = self._incr_aof()
        with contextlib.suppress(OSError, AttributeError):
            self.aof_samples.append((time.monotonic(), path.name, path.stat().st_size))
            self.aof_samples = self.aof_samples[-200:]

    def _lose_aof_tail(self, since: float) -> int:
        """Simulate a host crash: Redis wrote (but did not fsync) its last
        second of commands; cut the AOF back to its size at `since`. (A
        SIGKILL of redis-server alone loses nothing: every write(2) is in the
        page cache before the client gets its reply.)"""
        path = self._incr_aof()
        if path is None or not path.exists():
            return 0
        size = path.stat().st_size
        older = [n for t, name, n in self.aof_samples if name == path.name and t <= since]
        keep = older[-1] if older else 0
        if keep < size:
            with path.open("r+b") as fh:
                fh.truncate(keep)
        return size - keep

    def _stats_mark(self, *, reset: bool = False) -> None:
        """Close the current commandstats segment (INFO counters restart with
        Redis, so a run is the sum of its segments)."""
        try:
            stats = commandstats(self.conn)
        except RedisError:
            stats = None
        if reset or not hasattr(self, "_segment_start"):
            self._segment_start = stats or Counter()
            return
        if stats is not None:
            self.stats_segments.append(stats - self._segment_start)
            self._segment_start = stats

    def _watch_abandoned(self) -> None:
        for job in self.abandoned:
            if job.outcome != "pending":
                continue
            try:
                fetched = Job.fetch(job.job_id, connection=self.conn)
                status = fetched.get_status(refresh=False)
                retries_left = fetched.retries_left
            except NoSuchJobError:
                job.outcome = "handed_back" if job.seen else "vanished"
                job.resolved_after = time.monotonic() - job.killed_at
                continue
            except RedisError:
                return
            if not job.seen or job.seen[-1] != str(status):
                job.seen.append(str(status))
            if status == JobStatus.FAILED and job.function in CRON_FUNCTIONS:
                job.outcome = "cron_failed"  # no Retry for cron jobs; see verify()
            elif status == JobStatus.FAILED:
                job.outcome = "failed"
            elif status in (JobStatus.SCHEDULED, JobStatus.QUEUED, JobStatus.FINISHED) or (
                status == JobStatus.STARTED
                and job.retries_left is not None
                and retries_left is not None
                and retries_left < job.retries_left
            ):
                job.outcome = "handed_back"
            else:
                continue
            job.resolved_after = time.monotonic() - job.killed_at

    # -- settling ----------------------------------------------------------------

    def _not_quiet(self) -> str | None:
        """Why the system is not done yet, or None."""
        c = self.conn
        try:
            for stream in (f"{PREFIX}:inbox", f"{PREFIX}:outbox"):
                if c.xlen(stream):
                    return f"{stream} holds {c.xlen(stream)} entries"
            if any(job.outcome == "pending" for job in self.abandoned):
                pending = [j for j in self.abandoned if j.outcome == "pending"]
                return f"{len(pending)} abandoned job(s) not handed back yet"
            for name in (QUEUE, DELIVERY_QUEUE):
                queue = Queue(name, connection=c)
                if queue.count:
                    return f"queue {name} holds {queue.count} jobs"
                for registry in (
                    StartedJobRegistry(name, connection=c),
                    ScheduledJobRegistry(name, connection=c),
                ):
                    # Raw counts: reading a registry through RQ would clean it
                    # up, i.e. do the workers' job for them.
                    if c.zcard(registry.key):
                        return f"{registry.key} holds {c.zcard(registry.key)} jobs"
            pending = sum(1 for d in self._deliveries() if d.status == "pending")
            if pending:
                return f"{pending} deliveries pending"
        except RedisError as exc:
            return f"Redis: {exc!r}"
        return None

    def _deliveries(self) -> list[Delivery]:
        return self._deliveries_of(self.conn)

    @staticmethod
    def _deliveries_of(conn: redis_lib.Redis) -> list[Delivery]:
        keys = list(conn.scan_iter(f"{PREFIX}:delivery:*", count=1000))
        found = []
        for begin in range(0, len(keys), 500):
            for raw in conn.mget(keys[begin : begin + 500]):
                if raw is not None:
                    found.append(Delivery.from_json(raw))
        return found

    # -- verification ------------------------------------------------------------

    def _finish(self, plan: Plan, stack: Stack, subscriber: Subscriber) -> SoakReport:
        if self.config.redis_crash:
            self._account_for_crash(plan)
        self.verify(plan, stack, subscriber)
        self._figures(plan, stack, subscriber)
        return SoakReport(
            config={k: v for k, v in asdict(self.config).items() if k != "mix"}
            | {"mix": dict(self.config.mix)},
            ok=not self.violations,
            violations=self.violations,
            figures=self.figures,
            findings=self.findings,
            data_dir=str(self.data_dir),
        )

    def _account_for_crash(self, plan: Plan) -> None:
        """After Redis crashes: the acknowledged webhooks it lost. A dedupe key
        that is missing, or younger than the crash (a later duplicate from
        "Codat" was accepted as new), marks one. Those never brought back are
        left out of the oracle (a deployment relies on reconciliation for
        them) and reported."""
        ttl = 72 * 3600  # WEBHOOK_DEDUPE_TTL_SECONDS, the soak does not change it
        for killed_at, back_at in self.crashes:
            acked = sorted(
                {o.webhook_id for o in self.poster.outcomes if o.acked_at and o.acked_at <= back_at}
            )
            with self.conn.pipeline(transaction=False) as pipe:
                for webhook_id in acked:
                    pipe.pttl(f"{PREFIX}:seen:{webhook_id}")
                remaining = pipe.execute()
            now = time.time()
            for webhook_id, pttl in zip(acked, remaining, strict=True):
                if pttl < 0 or now - (ttl - pttl / 1000) > killed_at:
                    self.lost_in_crash.add(webhook_id)
        lost = self.lost_in_crash
        healed = {w for w in lost if self.conn.exists(f"{PREFIX}:seen:{w}")}
        self.lost_for_good = lost - healed
        self.figures["crash"] = {
            "aof_bytes_cut": self.aof_bytes_lost,
            "acknowledged_webhooks_lost": len(lost),
            "of_which_redelivered_later": len(healed),
            "lost_for_good": len(self.lost_for_good),
            "companies_affected": len(
                {c.company_id for c in plan.companies if set(c.webhook_ids) & self.lost_for_good}
            ),
        }

    def verify(self, plan: Plan, stack: Stack, subscriber: Subscriber) -> None:
        """Check every invariant; append a line to `violations` for each breach."""
        c = self.conn
        v = self.violations
        lost = getattr(self, "lost_for_good", set())

        # 1. The receiver acknowledged every message, at most once with 202.
        by_id: dict[str, list[PostOutcome]] = defaultdict(list)
        for outcome in self.poster.outcomes:
            by_id[outcome.webhook_id].append(outcome)
        planned_ids = {wid for company in plan.companies for wid in company.webhook_ids}
        unanswered = [o for o in self.poster.outcomes if o.acked_at is None]
        if len(self.poster.outcomes) != len(plan.posts):
            v.append(f"posted {len(self.poster.outcomes)} of {len(plan.posts)} deliveries")
        if unanswered:
            sample = [(o.webhook_id, o.status, o.retried_statuses[-3:]) for o in unanswered[:3]]
            v.append(f"{len(unanswered)} deliveries never acknowledged with 2xx, e.g. {sample}")
        accepted_twice = {
            wid
            for wid, outcomes in by_id.items()
            if sum(o.status == 202 for o in outcomes) > 1 and wid not in self.lost_in_crash
        }
        if accepted_twice:
            v.append(
                f"deduplication: {len(accepted_twice)} webhook ids were accepted (202) more than "
                f"once, e.g. {sorted(accepted_twice)[:3]}"
            )
        rejected = Counter(
            status
            for o in self.poster.outcomes
            for status in o.retried_statuses
            if status[:1] == "4"
        )
        if rejected:
            v.append(f"valid, signed deliveries answered 4xx: {dict(rejected)}")
        seen = sum(1 for wid in planned_ids if c.exists(f"{PREFIX}:seen:{wid}"))
        if seen != len(planned_ids) - len(lost):
            v.append(f"{len(planned_ids) - seen} acknowledged webhook ids are not remembered")

        # 2. Nothing left unprocessed.
        for key in ("inbox", "outbox", "inbox:dead", "outbox:dead"):
            length = c.xlen(f"{PREFIX}:{key}") if c.exists(f"{PREFIX}:{key}") else 0
            if length:
                v.append(f"{PREFIX}:{key} holds {length} entries")

        # 3. No job failed; every job a killed worker held was handed back.
        abandoned_cron = Counter()
        for name in (QUEUE, DELIVERY_QUEUE):
            failed = []
            for job_id in FailedJobRegistry(name, connection=c).get_job_ids(cleanup=False):
                try:
                    job = Job.fetch(job_id, connection=c)
                except NoSuchJobError:
                    continue
                reason = (job.exc_info or "").strip()
                # The clock's cron jobs carry no work of their own (a sweep only
                # queues a drain; the next one, a second later, does the same)
                # and RQ gives cron jobs no Retry: one a killed worker held
                # (running, or popped and not yet started) is failed. Counted,
                # not a violation.
                if job.func_name in CRON_FUNCTIONS and (
                    "AbandonedJobError" in reason or "stuck in intermediate queue" in reason
                ):
                    abandoned_cron[job.func_name.rsplit(".", 1)[-1]] += 1
                    continue
                failed.append((job.func_name, reason[-300:]))
            if failed:
                # A crash loses RQ's own bookkeeping too (executions, statuses).
                (self.findings if self.config.redis_crash else v).append(
                    f"{len(failed)} failed job(s) in {name}: {failed[:3]}"
                )
            started = c.zcard(StartedJobRegistry(name, connection=c).key)
            if started:
                v.append(f"{started} job(s) still registered as started in {name}")
        self.figures["abandoned_cron_jobs_failed"] = dict(abandoned_cron)
        orphans = self._orphaned_jobs()
        if orphans:
            v.append(
                f"RQ lost {len(orphans)} job(s): status queued, in no queue or registry (popped by "
                f"a worker killed before it started them): {orphans[:3]}"
            )
        for name in (QUEUE, DELIVERY_QUEUE):
            ttl = c.ttl(f"rq:clean_registries:{name}")
            if ttl and ttl > 60:
                self.findings.append(
                    f"RQ's maintenance lock for {name} is held by a dead worker for {ttl}s more: "
                    "no abandoned job of that queue is handed back until it expires"
                )
        not_back = [
            j for j in self.abandoned if j.outcome not in ("handed_back", "vanished", "cron_failed")
        ]
        if not_back:
            v.append(
                f"{len(not_back)} job(s) held by killed workers not handed back: "
                f"{[(j.function, j.outcome, j.seen) for j in not_back[:3]]}"
            )

        # 4. Every company equals the oracle: the pure state machine applied
        # to its event set; each event applied exactly once.
        store = CompanyStore(c, Keys(PREFIX), event_log_limit=200)
        records = {}
        mismatched = []
        event_logs_wrong = []
        for company in plan.companies:
            surviving = [
                body
                for body, wid in zip(company.bodies, company.webhook_ids, strict=True)
                if wid not in lost
            ]
            events = [parse_codat_event(body) for body in surviving]
            oracle = apply_events(CompanyFacts(company_id=company.company_id), events)
            record = store.get(company.company_id)
            records[company.company_id] = record
            if record is None:
                mismatched.append((company.company_id, company.kind, "missing", oracle.state.value))
                continue
            if record.state != oracle.state or record.facts != oracle.facts:
                mismatched.append(
                    (company.company_id, company.kind, record.state.value, oracle.state.value)
                )
            if not lost and oracle.state.value != company.expected_state:
                mismatched.append(
                    (company.company_id, company.kind, "oracle", company.expected_state)
                )
            # The per-company event log keeps the events that changed the
            # facts: each at most once, and replaying them rebuilds the company.
            logged = [event for event, _ in store.events(company.company_id)]
            counts = Counter(event.id for event in logged)
            rebuilt = apply_events(CompanyFacts(company_id=company.company_id), logged).facts
            foreign = set(counts) - {event.id for event in events}
            if any(n > 1 for n in counts.values()) or foreign or rebuilt != record.facts:
                event_logs_wrong.append(
                    (
                        company.company_id,
                        sum(n - 1 for n in counts.values() if n > 1),
                        len(foreign),
                        rebuilt == record.facts,
                    )
                )
        if mismatched:
            v.append(
                f"{len(mismatched)} companies differ from the oracle "
                f"(id, kind, stored, oracle): {mismatched[:5]}"
            )
        if event_logs_wrong:
            v.append(
                f"{len(event_logs_wrong)} companies' event logs are wrong (id, events logged "
                f"twice, events not theirs, replay rebuilds the company): {event_logs_wrong[:5]}"
            )
        applied = self._applied_from_logs()
        applied_twice = {wid: n for wid, n in applied.items() if n > 1}
        if applied_twice:
            # After a Redis crash a commit can be lost after its worker logged it;
            # the entry is then applied again. Only a crash explains that.
            (self.findings if self.config.redis_crash else v).append(
                f"{len(applied_twice)} webhooks were applied more than once (workers' "
                f"event.applied lines), e.g. {sorted(applied_twice.items())[:3]}"
            )
        self.figures["applied_but_not_logged"] = len(planned_ids - set(applied) - lost)
        self._check_api(stack, plan, records, v)

        # 5. Notifications: company.ready exactly once for each company that
        # became ready; state changes and revocations exactly as in history.
        if self.subscription_id is not None:
            self._check_notifications(plan, records, subscriber, v)

    def _orphaned_jobs(self) -> list[tuple[str, str]]:
        """Jobs RQ reports queued that no queue, intermediate queue or registry
        holds: nothing will ever run them."""
        c = self.conn
        held: set[str] = set()
        for name in (QUEUE, DELIVERY_QUEUE):
            for key in (f"rq:queue:{name}", f"rq:queue:{name}:intermediate"):
                held.update(i.decode() for i in c.lrange(key, 0, -1))
            for registry in ("wip", "scheduled", "failed", "finished", "deferred"):
                for member in c.zrange(f"rq:{registry}:{name}", 0, -1):
                    held.add(member.decode().split(":", 1)[0])
        orphans = []
        for key in c.scan_iter("rq:job:*", count=1000):
            job_id = key.decode().removeprefix("rq:job:")
            if ":" in job_id or job_id in held:
                continue
            status, description = c.hmget(key, "status", "description")
            if status == b"queued":
                orphans.append((job_id, (description or b"").decode()[:80]))
        return orphans

    def _applied_from_logs(self) -> Counter[str]:
        """How often each webhook id was applied, from the workers' logs. A
        worker killed between its commit and its log line leaves an
        application unlogged (counted in the figures), never a false double."""
        applied: Counter[str] = Counter()
        for path in sorted((self.data_dir / "logs").glob("worker-*.stdout")):
            with path.open(errors="replace") as lines:
                for line in lines:
                    if '"event.applied"' not in line:
                        continue
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        applied[json.loads(line)["webhook_id"]] += 1
        return applied

    def _check_api(self, stack: Stack, plan: Plan, records: dict, v: list[str]) -> None:
        wrong = []
        with httpx.Client(
            base_url=stack.base_url, headers=AUTH, trust_env=False, timeout=10
        ) as api:
            for company in plan.companies:
                record = records.get(company.company_id)
                answer = api.get(f"/api/companies/{company.company_id}")
                state = answer.json().get("state") if answer.status_code == 200 else None
                if record is None or state != record.state.value:
                    wrong.append((company.company_id, answer.status_code, state))
        if wrong:
            v.append(f"GET /api/companies disagrees with the store for {len(wrong)}: {wrong[:3]}")

    def _check_notifications(
        self, plan: Plan, records: dict, subscriber: Subscriber, v: list[str]
    ) -> None:
        received: dict[tuple[str, str], set[str]] = defaultdict(set)
        copies = Counter()
        for item in subscriber.received:
            envelope = item.envelope
            received[(envelope["type"], envelope["data"]["companyId"])].add(item.webhook_id)
            copies[item.webhook_id] += 1
            if item.webhook_id != envelope["id"]:
                v.append(f"webhook-id {item.webhook_id} differs from the envelope's id")
        wrong_ready, wrong_changes, after_crash = [], [], []
        wants = set(self.config.event_types)
        lost_companies = {
            company.company_id
            for company in plan.companies
            if set(company.webhook_ids) & self.lost_in_crash
        }
        for company in plan.companies:
            cid = company.company_id
            # After a crash, notifications sent for a commit Redis then lost may
            # describe transitions the company, re-applying its events in other
            # batches, no longer went through; company.ready (one id per
            # company) must still hold unless the company lost events.
            ready_sink = after_crash if cid in lost_companies else wrong_ready
            changes_sink = after_crash if self.config.redis_crash else wrong_changes
            record = records.get(cid)
            if record is None:
                continue
            if wants & {"*", "company.ready"}:
                # The first readiness has the company's own id; a platform
                # linked later may add one per new basis (at most one per
                # connection that made the company ready).
                first = notification_id("company.ready", cid)
                got = received[("company.ready", cid)]
                announced = len(record.ready_connections or ())
                if record.first_ready_at is None:
                    ok = not got
                else:
                    ok = first in got and len(got) <= max(announced, 1)
                if not ok:
                    ready_sink.append((cid, record.state.value, len(got)))
                if record.state.value == "ready" and record.first_ready_at is None:
                    ready_sink.append((cid, "ready but never marked ready", 0))
            history = record.history
            if len(history) < 25 and wants & {"*", "company.state_changed"}:
                changes = {
                    notification_id(cid, h.from_state, h.to_state, h.event_id) for h in history
                }
                if received[("company.state_changed", cid)] != changes:
                    changes_sink.append((cid, "state_changed", len(changes)))
            if len(history) < 25 and wants & {"*", "company.revoked"}:
                revoked = {
                    notification_id("company.revoked", cid, h.event_id)
                    for h in history
                    if h.to_state == "revoked"
                }
                if received[("company.revoked", cid)] != revoked:
                    changes_sink.append((cid, "revoked", len(revoked)))
        if wrong_ready:
            v.append(
                f"company.ready: {len(wrong_ready)} companies without exactly the one expected id "
                f"(id, state, distinct ids received): {wrong_ready[:5]}"
            )
        if wrong_changes:
            v.append(
                f"{len(wrong_changes)} companies' notifications differ from their history: "
                f"{wrong_changes[:5]}"
            )
        if after_crash:
            self.findings.append(
                f"{len(after_crash)} notification sets no longer match the history of companies "
                f"after the crash (commits or events lost): {after_crash[:3]}"
            )
        if subscriber.state.rejected:
            v.append(f"the subscriber rejected {subscriber.state.rejected} signatures")
        deliveries = self._deliveries()
        statuses = Counter(d.status for d in deliveries)
        self.figures["deliveries"] = dict(statuses)
        self.figures["notifications_received"] = {
            "distinct": len(copies),
            "duplicate_copies": sum(n - 1 for n in copies.values()),
        }
        dead = statuses.get("dead", 0)
        if dead:
            if self.config.allow_dead_letters:
                self.findings.append(
                    f"{dead} deliveries were dead-lettered (allowed by --allow-dead-letters)"
                )
            else:
                v.append(f"{dead} deliveries dead-lettered (fault windows outlasted the schedule?)")
        if statuses.get("pending"):
            v.append(f"{statuses['pending']} deliveries still pending")
        delivered = {d.notification_id for d in deliveries if d.status == "delivered"}
        missing = delivered - set(copies)
        if missing:
            v.append(f"{len(missing)} deliveries marked delivered never reached the subscriber")
        unknown = set(copies) - {d.notification_id for d in deliveries}
        if unknown:
            (self.findings if self.config.redis_crash else v).append(
                f"the subscriber received {len(unknown)} notifications with no delivery record"
            )

    # -- figures -----------------------------------------------------------------

    def _figures(self, plan: Plan, stack: Stack, subscriber: Subscriber) -> None:
        f = self.figures
        outcomes = self.poster.outcomes
        statuses = Counter(o.status for o in outcomes)
        retried = Counter(s for o in outcomes for s in o.retried_statuses)
        kinds = Counter(c.kind for c in plan.companies)
        f["companies"] = len(plan.companies)
        f["events"] = plan.messages
        f["deliveries_posted"] = len(outcomes)
        f["receiver_answers"] = {str(k): n for k, n in sorted(statuses.items(), key=str)}
        f["receiver_retries"] = dict(retried)
        f["lifecycles"] = dict(sorted(kinds.items()))
        f["final_states"] = dict(Counter(c.expected_state for c in plan.companies))
        f["worker_kills"] = {
            "kills": self.kills,
            "of_idle_workers": self.kills_idle,
            "jobs_abandoned": len(self.abandoned),
            "handed_back": sum(j.outcome == "handed_back" for j in self.abandoned),
            "vanished_unseen": sum(j.outcome == "vanished" for j in self.abandoned),
            "hand_back_seconds_max": round(
                max((j.resolved_after or 0 for j in self.abandoned), default=0), 1
            ),
            "by_function": dict(Counter(j.function.rsplit(".", 1)[-1] for j in self.abandoned)),
        }
        f["redis_restarts"] = [
            {
                "at": at,
                "downtime_s": down,
                "mode": "crash" if self.config.redis_crash else "graceful",
            }
            for at, down in self.redis_downtime
        ]
        f["unexpected_process_exits"] = [asdict(e) for e in stack.exits]
        for exit_ in stack.exits:
            self.findings.append(
                f"{exit_.name} (pid {exit_.pid}) exited on its own with rc {exit_.returncode} at "
                f"{exit_.at}s{' just after a Redis restart' if exit_.near_redis_restart else ''}; "
                f"restarted by the harness. Last log lines: {exit_.last_lines!r}"
            )
        f["subscriber"] = {
            "requests": subscriber.state.requests,
            "rejected": subscriber.state.rejected,
        }
        # Redis commands per event.
        total: Counter[str] = Counter()
        for segment in self.stats_segments:
            total.update(segment)
        idle = {k: v * self.soak_seconds for k, v in self.idle_rate.items()}
        net = Counter(
            {
                k: max(0, int(n - idle.get(k, 0) - self.own_commands.get(k, 0)))
                for k, n in total.items()
            }
        )
        events = max(1, plan.messages)
        cpu_ms = net.pop(CPU_MS, 0)
        total.pop(CPU_MS, None)
        idle_cpu_per_s = self.idle_rate.pop(CPU_MS, 0.0)
        f["redis"] = {
            "commands_total": sum(total.values()),
            "harness_own_commands": sum(self.own_commands.values()),
            "idle_background_per_s": round(sum(self.idle_rate.values()), 1),
            "commands_net_of_idle": sum(net.values()),
            "per_event": round(sum(net.values()) / events, 1),
            "per_delivery_posted": round(sum(net.values()) / max(1, len(outcomes)), 1),
            "top_per_event": {
                name: round(n / events, 2) for name, n in net.most_common(15) if n / events >= 0.05
            },
            "used_memory_mb": round(int(self.conn.info("memory")["used_memory"]) / 2**20, 1),
            "cpu_ms_per_event": round(cpu_ms / events, 3),
            "cpu_ms_idle_per_s": round(idle_cpu_per_s, 1),
        }


def run_soak(config: SoakConfig) -> SoakReport:
    return SoakRun(config).run()


# -- the cost model ----------------------------------------------------------------


def cost_model(batch_sizes: Sequence[int] = (1, 10, 50, 200)) -> dict[str, Any]:
    """Redis commands per unit of work, each measured alone, in-process, on a
    private Redis (INFO commandstats deltas): the receiver's accept and
    duplicate, a drain per inbox entry by batch size, an RQ job's own
    overhead, a relay per notification and a delivery per attempt. The soak's
    totals are these, mixed by the traffic (docs/scaling.md)."""
    from app import create_app
    from codat_authflow.bootstrap import Services
    from codat_authflow.delivery.attempts import attempt_delivery
    from codat_authflow.delivery.sender import make_client
    from codat_authflow.settings import Settings
    from workers.jobs import drain
    from workers.worker import AuthflowWorker

    server = start_redis_server()
    subscriber = Subscriber()
    try:
        conn = redis_lib.Redis.from_url(server.url)
        env = stack_environment(server.url)
        settings = Settings.from_env(env)

        def delta(action) -> int:
            before = commandstats(conn)
            action()
            after = commandstats(conn) - before
            after.pop("info", None)
            after.pop(CPU_MS, None)
            return sum(after.values())

        def fresh() -> Services:
            conn.flushall()
            ctx = Services.build(settings, conn)
            ctx.inbox.ensure_group()
            ctx.store.outbox.ensure_group()
            return ctx

        app = create_app(env)
        client = app.test_client()
        bodies = [encode_body(b) for _ in range(40) for b in build("happy_path")[0].events]

        def post(raw: bytes, webhook_id: str) -> int:
            headers = signed_headers(TEST_WEBHOOK_SECRET, raw, webhook_id=webhook_id)
            return client.post("/webhooks/codat", data=raw, headers=headers).status_code

        fresh()
        post(bodies[0], "msg_warm")  # first one also queues a drain job
        ids = [f"msg_cost_{i}" for i in range(len(bodies))]
        figures: dict[str, Any] = {}
        figures["receiver_accept_per_post"] = round(
            delta(lambda: [post(b, i) for b, i in zip(bodies, ids, strict=True)]) / len(bodies), 1
        )
        figures["receiver_duplicate_per_post"] = round(
            delta(lambda: [post(b, i) for b, i in zip(bodies, ids, strict=True)]) / len(bodies), 1
        )
        queue = Queue(settings.queue_name, connection=conn)
        figures["rq_enqueue_drain"] = delta(
            lambda: queue.enqueue("workers.scheduling.sweep", job_timeout=10)
        )

        # Drain cost per entry, by batch size, without and with a "*" subscription.
        for with_subscription in (False, True):
            per_entry = {}
            for size in batch_sizes:
                ctx = fresh()
                if with_subscription:
                    ctx.subscriptions.create(subscriber.url, ["*"], "cost")
                for i, raw in enumerate(bodies[:size]):
                    ctx.inbox.accept(f"m{i}", raw, 0)
                per_entry[size] = round(delta(lambda ctx=ctx: drain(ctx)) / size, 1)
            name = "drain_and_relay_per_entry" if with_subscription else "drain_per_entry"
            figures[name] = per_entry
        deliveries = SoakRun._deliveries_of(conn)
        figures["deliveries_per_entry_at_200"] = round(len(deliveries) / max(batch_sizes), 2)

        # A delivery attempt that succeeds (the job's own work, not RQ's).
        ctx = Services.build(settings, conn)
        subscription = ctx.subscriptions.all()[0]
        subscriber.set(secret=subscription.secrets[0].secret)
        http = make_client()
        sample = deliveries[:50]
        figures["delivery_attempt"] = round(
            delta(lambda: [attempt_delivery(ctx, d.id, client=http) for d in sample])
            / max(1, len(sample)),
            1,
        )

        # RQ's own overhead per job: enqueue + dequeue + run + finish a no-op.
        conn.flushall()
        noop = Queue("cost-noop", connection=conn)

        def run_jobs(count: int, result_ttl: int) -> None:
            for _ in range(count):
                noop.enqueue(len, "x", result_ttl=result_ttl)  # a job doing nothing in Redis
            AuthflowWorker([noop], connection=conn).work(burst=True, logging_level="WARNING")

        empty = delta(lambda: run_jobs(0, 0))
        for result_ttl, name in ((0, "rq_job_overhead"), (60, "rq_job_overhead_result_kept")):
            figures[name] = round((delta(lambda t=result_ttl: run_jobs(50, t)) - empty) / 50, 1)
        return figures
    finally:
        subscriber.stop()
        server.close()


# -- CLI ---------------------------------------------------------------------------


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(part) for part in text.split(",") if part.strip())


def _pairs(values: Sequence[str]) -> tuple[tuple[str, str], ...]:
    pairs = []
    for value in values:
        name, sep, setting = value.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"--env wants NAME=VALUE, got {value!r}")
        pairs.append((name, setting))
    return tuple(pairs)


def parse_args(argv: Sequence[str] | None = None) -> tuple[SoakConfig | None, Path | None]:
    parser = argparse.ArgumentParser(
        prog="python -m perf.soak",
        description="Soak the real stack with realistic Codat traffic and faults; "
        "exit 1 if an invariant breaks.",
    )
    add = parser.add_argument
    add("--companies", type=int, default=200)
    add("--duration", type=float, default=20.0, help="seconds over which deliveries are posted")
    add("--seed", type=int, default=1)
    add("--max-copies", type=int, default=3, help="each event is delivered 1..N times")
    add("--window", type=int, default=64, help="deliveries are shuffled within windows this big")
    add("--concurrency", type=int, default=16, help="posting threads")
    add("--web-workers", type=int, default=4)
    add("--rq-workers", type=int, default=0, help="`python -m workers` (both queues)")
    add("--inbox-workers", type=int, default=2, help="`python -m workers --queues inbox`")
    add("--delivery-workers", type=int, default=1, help="`... --queues deliveries`")
    add("--kill-every", type=float, default=None, help="SIGKILL a worker every S seconds")
    add("--kill-from", type=float, default=1.0)
    add("--kill-until", type=float, default=None, help="default: end of posting")
    add("--redis-restart-at", type=_floats, default=(), help="seconds, comma-separated")
    add(
        "--redis-crash",
        action="store_true",
        help="instead of a graceful restart, SIGKILL Redis and cut the last --lose-seconds "
        "of its AOF (what a host crash does to writes not yet fsynced)",
    )
    add("--lose-seconds", type=float, default=1.0)
    add(
        "--subscriber-faults",
        type=lambda s: tuple(SubscriberFault.parse(p) for p in s.split(",") if p.strip()),
        default=(),
        help="mode@start+length,... with mode fail|hang|down, e.g. fail@10+5,hang@30+4",
    )
    add("--hang-seconds", type=float, default=12.0)
    add("--event-types", default="*", help="subscription's event types; 'none' for no subscriber")
    add("--settle-timeout", type=float, default=240.0)
    add("--allow-dead-letters", action="store_true")
    add("--data-dir", type=Path, default=None)
    add("--log-level", default="INFO")
    add("--env", action="append", default=[], help="NAME=VALUE for the stack's processes")
    add("--json", type=Path, default=None, help="also write the report as JSON here")
    add("--quiet", action="store_true")
    add("--cost-model", action="store_true", help="only measure Redis commands per unit of work")
    args = parser.parse_args(argv)
    if args.cost_model:
        return None, args.json
    event_types = () if args.event_types == "none" else tuple(args.event_types.split(","))
    config = SoakConfig(
        companies=args.companies,
        duration=args.duration,
        seed=args.seed,
        max_copies=args.max_copies,
        window=args.window,
        concurrency=args.concurrency,
        web_workers=args.web_workers,
        rq_workers=args.rq_workers,
        inbox_workers=args.inbox_workers,
        delivery_workers=args.delivery_workers,
        kill_every=args.kill_every,
        kill_from=args.kill_from,
        kill_until=args.kill_until,
        redis_restarts=args.redis_restart_at,
        redis_crash=args.redis_crash,
        lose_seconds=args.lose_seconds,
        subscriber_faults=args.subscriber_faults,
        hang_seconds=args.hang_seconds,
        event_types=event_types,
        settle_timeout=args.settle_timeout,
        allow_dead_letters=args.allow_dead_letters,
        data_dir=args.data_dir,
        log_level=args.log_level,
        env=_pairs(args.env),
        verbose=not args.quiet,
    )
    return config, args.json


def main(argv: Sequence[str] | None = None) -> int:
    config, json_path = parse_args(argv)
    if config is None:
        figures = cost_model()
        print(json.dumps(figures, indent=2))
        if json_path is not None:
            json_path.write_text(json.dumps(figures, indent=2))
        return 0
    report = run_soak(config)
    print(report.text())
    if json_path is not None:
        json_path.write_text(report.to_json())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
