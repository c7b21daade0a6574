"""Counters and histograms kept in Redis, written by every process.

Why Redis rather than prometheus_client's multiprocess mode
(PROMETHEUS_MULTIPROC_DIR):

* The processes that count are not one process tree. gunicorn forks several
  web workers, `python -m workers` runs elsewhere, and under the Procfile each
  process type is its own dyno or container. A multiprocess directory is per
  host: the web's `/metrics` would never see what the RQ workers counted, and
  each worker host would need its own scrape endpoint and directory wiping
  (gunicorn `child_exit` -> `mark_process_dead`, a wipe at every start).
  Redis is already the one thing all of them share.
* The counts that matter are exact. Transitions and companies created are
  incremented inside the very MULTI that commits the company
  (`codat_authflow.company_updates.commit_change`), so a
  retried or crashed drain can neither miss nor double-count them.
* Any web process answers `/metrics` with the same, service-wide numbers, and
  a restart resets nothing.

The price is a Redis write per counted thing: one HINCRBY for a webhook,
sent after the response (`response.call_on_close`); drain and delivery
counters ride in pipelines that are sent anyway. Writing a metric never
raises: when Redis cannot be reached (a webhook answered 503 "unavailable"),
the increments wait in this process and go out with its next successful
write, so even those are counted once Redis is back.

Gauges (companies per state, queue depths, dead letters) are not counted at
all: `codat_authflow.observability.collector` reads them from Redis at scrape time.

Key layout (under `KEY_PREFIX`):

| key | type | what |
| --- | --- | --- |
| `{p}:metrics:counter:{name}` | hash | label values joined by `|` -> count |
| `{p}:metrics:histogram:{name}` | hash | `le:{bound}` -> count in that bucket alone; `sum` |

This module does not import prometheus_client or Flask: the workers use it.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import structlog
from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError

from codat_authflow.storage.inbox import OutcomeCounter
from codat_authflow.storage.keys import Keys

log = structlog.get_logger(__name__)

LABEL_SEPARATOR = "|"
MAX_LABEL_LENGTH = 80
MAX_PENDING_FIELDS = 10_000


@dataclass(frozen=True)
class Counter:
    name: str  # without `_total`; the exposition adds it
    help: str
    labels: tuple[str, ...] = ()
    known: tuple[tuple[str, ...], ...] = ()  # label values shown as 0 before any count

    def key(self, prefix: str) -> str:
        return Keys(prefix).metric_counter(self.name)

    def field(self, values: Sequence[str]) -> str:
        if len(values) != len(self.labels):
            raise ValueError(f"{self.name} takes labels {self.labels}, got {tuple(values)}")
        return LABEL_SEPARATOR.join(_clean(v) for v in values) if values else "_"

    def labels_of(self, stored_field: str) -> tuple[str, ...]:
        if not self.labels:
            return ()
        parts = stored_field.split(LABEL_SEPARATOR)
        return tuple(parts) if len(parts) == len(self.labels) else ()


@dataclass(frozen=True)
class Histogram:
    name: str
    help: str
    buckets: tuple[float, ...] = field(
        default=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
    )

    def key(self, prefix: str) -> str:
        return Keys(prefix).metric_histogram(self.name)

    def bucket_field(self, value: float) -> str:
        for bound in self.buckets:
            if value <= bound:
                return f"le:{bound:g}"
        return "le:+Inf"


def _clean(value: object) -> str:
    text = str(value).replace(LABEL_SEPARATOR, "/")
    return text[:MAX_LABEL_LENGTH] or "-"


# -- the metrics ----------------------------------------------------------------

WEBHOOK_OUTCOMES = (
    "queued",  # 202, stored in the inbox
    "duplicate",  # 200, that webhook id was accepted before
    "bad_signature",  # 401: no valid signature, signature headers missing, or wrong Authorization
    "stale",  # 401: webhook-timestamp more than 5 minutes from now
    "malformed",  # 400/415: not JSON, not a Codat event, wrong Content-Type
    "too_large",  # 413: over MAX_CONTENT_LENGTH
    "unavailable",  # 503: Redis could not store it (Codat retries)
    "error",  # anything else (a 500: a bug)
)

WEBHOOKS_RECEIVED = Counter(
    "authflow_webhooks_received",
    "Codat webhooks received at POST /webhooks/codat, by outcome.",
    ("outcome",),
    tuple((o,) for o in WEBHOOK_OUTCOMES),
)

WEBHOOKS_UNREPLICATED = Counter(
    "authflow_webhooks_unreplicated",
    "Webhooks stored on the primary but answered 503 because fewer than "
    "REDIS_MIN_REPLICAS_ACK replicas acknowledged them within REDIS_REPLICA_ACK_TIMEOUT_MS "
    "(counted as queued or duplicate too; Codat retries).",
)

INBOX_EVENT_OUTCOMES = ("applied", "ignored", "rejected", "failed")
INBOX_EVENTS = Counter(
    "authflow_inbox_events",
    "Inbox entries processed by the drain: applied to a company, ignored (event type we do "
    "not act on), rejected (unparseable, dead-lettered) or failed (the state machine raised).",
    ("outcome",),
    tuple((o,) for o in INBOX_EVENT_OUTCOMES),
)

TRANSITIONS = Counter(
    "authflow_company_transitions",
    "Company state transitions committed (webhooks, API and reconciliation alike).",
    ("from_state", "to_state"),
)

COMPANIES_CREATED = Counter(
    "authflow_companies_created",
    "Companies seen for the first time (a company record was created).",
)

DELIVERY_OUTCOMES = ("delivered", "retry_scheduled", "dead", "cancelled", "replayed")
DELIVERIES = Counter(
    "authflow_deliveries",
    "Downstream delivery attempts by outcome: delivered, retry_scheduled (attempt failed, "
    "another is scheduled), dead (retries exhausted or subscription disabled: dead letter), "
    "cancelled (subscription deleted), and replayed (a dead letter sent again).",
    ("outcome",),
    tuple((o,) for o in DELIVERY_OUTCOMES),
)

RECONCILIATION_ACTIONS = Counter(
    "authflow_reconciliation_actions",
    "What reconciliation did, by action (checked, changed, stuck, failed, and one per "
    "synthetic event type it applied).",
    ("action",),
)

UNKNOWN_VALUE_KINDS = ("event_type", "connection_status", "source_type", "data_type_status")
UNKNOWN_VALUES = Counter(
    "authflow_codat_unknown_values",
    "Values of Codat's enums that we do not know, seen in drained events, by kind: an event "
    "type we do not act on, a connection status, a sourceType, a data type read status. "
    "Accepted and stored, never taken as linked or complete; a rise means Codat added one.",
    ("kind",),
    tuple((k,) for k in UNKNOWN_VALUE_KINDS),
)

CODAT_RATE_LIMIT_EVENTS = ("reached", "reset", "http_429")
CODAT_RATE_LIMIT = Counter(
    "authflow_codat_rate_limit",
    "Codat's rate limit: client.rateLimit.reached and client.rateLimit.reset webhooks drained, "
    "and 429 answers to our calls (http_429). Reconciliation pauses on reached (until its "
    "expiryDate) and on a 429 (Retry-After), and resumes on reset.",
    ("event",),
    tuple((e,) for e in CODAT_RATE_LIMIT_EVENTS),
)

JOB_OUTCOMES = ("finished", "failed", "retried")
JOBS = Counter(
    "authflow_rq_jobs",
    "RQ jobs run by our workers, by function and outcome.",
    ("function", "outcome"),
)

RECEIPT_TO_TRANSITION = Histogram(
    "authflow_receipt_to_transition_seconds",
    "From a webhook's receipt (inbox received_at) to the commit of the company transition "
    "it caused.",
)

RECEIPT_TO_COMMIT = Histogram(
    "authflow_receipt_to_commit_seconds",
    "From a webhook's receipt to the commit of its inbox entry (every applied event, "
    "whether or not the state changed): the inbox lag.",
)

COUNTERS: tuple[Counter, ...] = (
    WEBHOOKS_RECEIVED,
    WEBHOOKS_UNREPLICATED,
    INBOX_EVENTS,
    TRANSITIONS,
    COMPANIES_CREATED,
    DELIVERIES,
    RECONCILIATION_ACTIONS,
    JOBS,
    UNKNOWN_VALUES,
    CODAT_RATE_LIMIT,
)
HISTOGRAMS: tuple[Histogram, ...] = (RECEIPT_TO_TRANSITION, RECEIPT_TO_COMMIT)


# -- writing --------------------------------------------------------------------

# (key, field) -> amount not yet written (Redis was unreachable); per process.
_pending: dict[tuple[str, str], float] = {}
_pending_lock = threading.Lock()


def counter_update(
    prefix: str, counter: Counter, labels: Sequence[str] = (), amount: float = 1
) -> tuple[tuple[str, str], float]:
    return (counter.key(prefix), counter.field(labels)), amount


def histogram_updates(
    prefix: str, histogram: Histogram, value: float
) -> list[tuple[tuple[str, str], float]]:
    key = histogram.key(prefix)
    value = max(0.0, float(value))
    return [((key, histogram.bucket_field(value)), 1), ((key, "sum"), value)]


def queue_updates(pipe: Pipeline, updates: Iterable[tuple[tuple[str, str], float]]) -> None:
    """Add the increments to `pipe` (e.g. inside a MULTI, to commit with it)."""
    for (key, name), amount in updates:
        if name == "sum" or not float(amount).is_integer():
            pipe.hincrbyfloat(key, name, amount)
        else:
            pipe.hincrby(key, name, int(amount))


def write(redis: Redis, updates: Iterable[tuple[tuple[str, str], float]]) -> bool:
    """Send increments in one round trip, with any left over from a failed
    write. Never raises; returns False (and keeps them) if Redis failed."""
    with _pending_lock:
        for target, amount in updates:
            if target in _pending or len(_pending) < MAX_PENDING_FIELDS:
                _pending[target] = _pending.get(target, 0) + amount
        batch = dict(_pending)
        _pending.clear()
    if not batch:
        return True
    try:
        with redis.pipeline(transaction=False) as pipe:
            queue_updates(pipe, batch.items())
            pipe.execute()
        return True
    except RedisError as exc:
        with _pending_lock:
            for target, amount in batch.items():
                _pending[target] = _pending.get(target, 0) + amount
        log.debug("metrics.write_failed", error=repr(exc), pending=len(batch))
        return False


def increment(redis: Redis, prefix: str, counter: Counter, *labels: str, amount: float = 1) -> bool:
    return write(redis, [counter_update(prefix, counter, labels, amount)])


def observe(redis: Redis, prefix: str, histogram: Histogram, value: float) -> bool:
    return write(redis, histogram_updates(prefix, histogram, value))


# -- what each part of the service records ------------------------------------------


def record_webhook(redis: Redis, prefix: str, outcome: str) -> bool:
    return increment(redis, prefix, WEBHOOKS_RECEIVED, outcome)


def record_unreplicated(redis: Redis, prefix: str) -> bool:
    return increment(redis, prefix, WEBHOOKS_UNREPLICATED)


def webhook_outcome_counter(prefix: str) -> OutcomeCounter:
    """Where the inbox's accept script counts `queued` and `duplicate` itself,
    in the same round trip as the store (codat_authflow/storage/inbox.py)."""
    return OutcomeCounter(
        key=WEBHOOKS_RECEIVED.key(prefix),
        queued_field=WEBHOOKS_RECEIVED.field(("queued",)),
        duplicate_field=WEBHOOKS_RECEIVED.field(("duplicate",)),
    )


def record_delivery(redis: Redis, prefix: str, outcome: str, amount: int = 1) -> bool:
    return increment(redis, prefix, DELIVERIES, outcome, amount=amount)


def record_reconciliation(redis: Redis, prefix: str, action: str, amount: int = 1) -> bool:
    """For the reconciliation job (codat_authflow/journey/reconcile.py): e.g. after each
    company, `record_reconciliation(r, p, "checked")`, `"changed"` when its
    state moved, `"stuck"`, `"failed"` on a CodatError, and one per synthetic
    event applied (`event.type`)."""
    return increment(redis, prefix, RECONCILIATION_ACTIONS, action, amount=amount)


def record_job(redis: Redis, prefix: str, function: str, outcome: str) -> bool:
    return increment(redis, prefix, JOBS, function, outcome)


def record_drain(
    redis: Redis,
    prefix: str,
    entries: Sequence,
    events_by_company: Mapping[str, Sequence],
    entry_ids_by_company: Mapping[str, Sequence[bytes]],
    applied,
    counts: Mapping[str, int],
    *,
    now_ms: int,
    unknown: Mapping[str, int] | None = None,
) -> bool:
    """After a drain batch committed: inbox outcomes, unknown Codat values by
    kind, and for each applied event and each transition the time since its
    webhook was received. `applied` is `codat_authflow.company_updates.Applied`; entries
    are inbox `StreamEntry`s."""
    updates = [
        counter_update(prefix, INBOX_EVENTS, (outcome,), counts.get(outcome, 0))
        for outcome in INBOX_EVENT_OUTCOMES
        if counts.get(outcome)
    ]
    updates += [
        counter_update(prefix, UNKNOWN_VALUES, (kind,), n) for kind, n in (unknown or {}).items()
    ]
    received = {e.entry_id: _int(e.fields.get(b"received_at")) for e in entries}
    for company_id, outcome in applied.outcomes.items():
        by_event: dict[str, int] = {}
        for event, entry_id in zip(
            events_by_company[company_id], entry_ids_by_company[company_id], strict=True
        ):
            at = received.get(entry_id)
            if at is None:
                continue
            by_event[event.id] = min(at, by_event.get(event.id, at))
            updates += histogram_updates(prefix, RECEIPT_TO_COMMIT, (now_ms - at) / 1000)
        for transition in outcome.transitions:
            at = by_event.get(transition.cause_event_id)
            if at is not None:
                updates += histogram_updates(prefix, RECEIPT_TO_TRANSITION, (now_ms - at) / 1000)
    return write(redis, updates)


def _int(raw: bytes | None) -> int | None:
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


# -- reading ----------------------------------------------------------------------


def read_counters(redis: Redis, prefix: str) -> dict[str, dict[tuple[str, ...], float]]:
    """Every counter's values by label values (known label values at 0)."""
    with redis.pipeline(transaction=False) as pipe:
        for counter in COUNTERS:
            pipe.hgetall(counter.key(prefix))
        raws = pipe.execute()
    result: dict[str, dict[tuple[str, ...], float]] = {}
    for counter, raw in zip(COUNTERS, raws, strict=True):
        values: dict[tuple[str, ...], float] = dict.fromkeys(counter.known, 0.0)
        if not counter.labels:
            values.setdefault((), 0.0)
        for stored_field, amount in raw.items():
            labels = counter.labels_of(stored_field.decode())
            if len(labels) == len(counter.labels):
                values[labels] = values.get(labels, 0.0) + float(amount)
        result[counter.name] = values
    return result


@dataclass(frozen=True)
class HistogramValue:
    buckets: list[tuple[float, float]]  # (upper bound, cumulative count), ending with inf
    count: float
    sum: float


def read_histograms(redis: Redis, prefix: str) -> dict[str, HistogramValue]:
    with redis.pipeline(transaction=False) as pipe:
        for histogram in HISTOGRAMS:
            pipe.hgetall(histogram.key(prefix))
        raws = pipe.execute()
    result = {}
    for histogram, raw in zip(HISTOGRAMS, raws, strict=True):
        stored = {k.decode(): float(v) for k, v in raw.items()}
        running, buckets = 0.0, []
        for bound in (*histogram.buckets, math.inf):
            running += stored.get("le:+Inf" if bound == math.inf else f"le:{bound:g}", 0.0)
            buckets.append((bound, running))
        result[histogram.name] = HistogramValue(
            buckets=buckets, count=running, sum=stored.get("sum", 0.0)
        )
    return result
