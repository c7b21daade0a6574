"""The soak's knobs: `SoakConfig`, subscriber fault windows, the traffic mix,
and the production-like environment the stack runs with (short timings, so
faults heal in seconds)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from tests.support.processes import (
    TEST_API_TOKEN,
    app_env,
)

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
