"""One soak run, start to report (`run_soak`): the main loop that posts,
injects faults on schedule, supervises the processes and waits until the
system is quiet."""

from __future__ import annotations

import contextlib
import random
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
from redis.exceptions import RedisError
from rq import Queue, Worker
from rq.registry import ScheduledJobRegistry, StartedJobRegistry

from codat_authflow.storage.deliveries import Delivery
from perf.soak.config import (
    AUTH,
    DELIVERY_QUEUE,
    LOOP_TICK_SECONDS,
    POST_GIVE_UP_SECONDS,
    PREFIX,
    QUEUE,
    SoakConfig,
    SubscriberFault,
    stack_environment,
)
from perf.soak.faults import AbandonedJob, FaultInjection
from perf.soak.measure import (
    CommandAccounting,
    CountingRedis,
    commandstats,
    deliveries_of,
    load_while_posting,
    redis_cpu_seconds,
)
from perf.soak.notifications import NotificationOracle
from perf.soak.oracle import Oracle
from perf.soak.plan import Plan, plan_traffic
from perf.soak.report import Figures, SoakReport
from perf.soak.stack import Stack
from perf.soak.traffic import Poster
from tests.support.processes import TEST_WEBHOOK_SECRET, start_redis
from tests.support.subscriber import Subscriber


class SoakRun(CommandAccounting, FaultInjection, Oracle, NotificationOracle, Figures):
    """One soak: plan, start, post with faults, settle, verify, report."""

    def __init__(self, config: SoakConfig):
        self.config = config
        self.data_dir = (
            Path(config.data_dir)
            if config.data_dir
            else Path(tempfile.mkdtemp(prefix="authflow-soak-"))
        )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # The Redis is persistent: a data dir from an earlier run would load
        # that run's AOF (its dedupe keys, deliveries, jobs) and its workers'
        # logs would be read as this run's, making every check meaningless.
        previous = [p.name for p in (self.data_dir / "redis", self.data_dir / "logs") if p.exists()]
        if previous:
            found = ", ".join(f"{name}/" for name in previous)
            raise ValueError(
                f"data dir {self.data_dir} holds an earlier run ({found}): "
                "pick another --data-dir or remove it"
            )
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
        server = start_redis(
            self.data_dir / "redis",
            persistent=True,
            config={"maxmemory-policy": "noeviction"},
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
        backlogs: list[tuple[float, int, int]] = []  # (now, outbox, delivery schedule)
        cpu_samples: list[tuple[float, float, float]] = []  # (now, process s, main thread s)
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
                    backlogs.append(
                        (
                            round(now, 1),
                            int(self.conn.xlen(f"{PREFIX}:outbox")),
                            int(self.conn.zcard(f"{PREFIX}:deliveries:pending")),
                        )
                    )
                with contextlib.suppress(RedisError):
                    cpu_samples.append((now, *redis_cpu_seconds(self.conn)))
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
        posting_end = poster.finished_at - t0
        self.figures["inbox_backlog_at_end_of_posting"] = next(
            (n for at, n in reversed(samples) if at <= posting_end), 0
        )
        self.figures["outbox_backlog_max"] = max((n for _, n, _ in backlogs), default=0)
        self.figures["deliveries_scheduled_max"] = max((n for _, _, n in backlogs), default=0)
        self.figures["deliveries_scheduled_at_end_of_posting"] = next(
            (n for at, _, n in reversed(backlogs) if at <= posting_end), 0
        )
        self.figures["while_posting"] = load_while_posting(
            cpu_samples, posting_end, plan.messages, len(plan.posts)
        )
        # The idle background (the clock's sweeps, heartbeats): measured now, subtracted later.
        before, t_idle = commandstats(self.conn), time.monotonic()
        time.sleep(config.idle_sample_seconds)
        idle = commandstats(self.conn) - before
        self.idle_rate = {k: v / (time.monotonic() - t_idle) for k, v in idle.items()}

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
        return deliveries_of(self.conn)

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


def run_soak(config: SoakConfig) -> SoakReport:
    return SoakRun(config).run()
