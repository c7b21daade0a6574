"""The drain job: apply verified webhooks from the inbox to company state,
then relay the notifications those changes caused (workers/notify.py).

At-least-once, exactly-once in effect: an inbox entry is acknowledged in the
same Redis transaction that commits the state it produced. A worker killed at
any point leaves its entries pending; the next drain claims them after the
visibility timeout and applies them again, which the idempotent state machine
turns into no change if the first attempt had in fact committed.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

import structlog

from codat_authflow.bootstrap import Services
from codat_authflow.delivery.attempts import ensure_pump
from codat_authflow.delivery.relay import relay
from codat_authflow.jobs import enqueue_drain
from codat_authflow.journey.rate_limit import (
    RateLimitSignal,
    queue_signal,
    report_signal,
    signal_of,
)
from codat_authflow.observability.metrics import record_drain
from codat_authflow.storage.inbox import webhook_id_of
from codat_authflow.storage.streams import StreamEntry, consumer_name
from state_machine import CodatEvent, InvalidEvent, parse_codat_event
from state_machine.events import unknown_values
from workers.context import current

log = structlog.get_logger(__name__)

IGNORED_EVENTS_MAXLEN = 10_000

# Unknown Codat values already logged by this process: each is logged once
# (the metric counts every occurrence). Bounded, so a flood of junk values
# cannot grow it.
_UNKNOWN_LOGGED: set[tuple[str, str]] = set()
_UNKNOWN_LOGGED_MAX = 1_000


def _count_unknown_values(decoded: Iterable[tuple[StreamEntry, CodatEvent]]) -> dict[str, int]:
    """Unknown enum values by kind; logs each distinct one once per process."""
    counts: Counter[str] = Counter()
    for entry, event in decoded:
        for kind, value in unknown_values(event):
            counts[kind] += 1
            if (kind, value) in _UNKNOWN_LOGGED or len(_UNKNOWN_LOGGED) >= _UNKNOWN_LOGGED_MAX:
                continue
            _UNKNOWN_LOGGED.add((kind, value))
            log.warning(
                "codat.unknown_value",
                kind=kind,
                value=value[:100],
                webhook_id=webhook_id_of(entry),
                event_type=event.type,
                company_id=event.company_id,
            )
    return dict(counts)


def drain_inbox() -> dict[str, int]:
    """RQ job: read and apply inbox entries until the inbox has been idle for
    DRAIN_IDLE_MS (or the time budget is spent: then another drain job is
    queued)."""
    return drain(current())


def drain(ctx: Services) -> dict[str, int]:
    """Under a steady stream of webhooks one drain job keeps reading (a
    blocking read returns as soon as an entry arrives) instead of one short
    job per few webhooks: RQ's own cost per job (~50 Redis round trips) is
    paid rarely, and the other workers stay free for deliveries. While it
    reads it holds the drain-scheduled flag, so receivers queue no more
    drains; when the inbox goes idle it releases the flag, then reads once
    more, so an entry stored just before the release is not left waiting."""
    settings = ctx.settings
    consumer = consumer_name()
    deadline = time.monotonic() + settings.drain_max_seconds
    hold_seconds = settings.drain_max_seconds + 30
    ctx.inbox.hold_drain_request(hold_seconds)
    totals = {"applied": 0, "ignored": 0, "rejected": 0, "failed": 0, "notifications": 0}

    def process(entries) -> None:
        counts = process_entries(ctx, entries)
        for name, value in counts.items():
            totals[name] += value
        if counts["notifications"]:
            relay(ctx, reclaim=False)  # at once: subscribers hear of a change in milliseconds

    entries = ctx.inbox.reclaim_abandoned(
        consumer,
        min_idle_ms=settings.inbox_visibility_timeout_seconds * 1000,
        max_deliveries=settings.inbox_max_deliveries,
        count=settings.inbox_batch_size,
    )
    if entries:
        log.warning("inbox.reclaimed", count=len(entries))
    busy = False  # only a drain that found work waits for more: an idle one leaves at once
    while True:
        if not entries:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            block_ms = max(1, min(settings.drain_idle_ms, remaining_ms)) if busy else None
            entries = ctx.inbox.read_new(consumer, settings.inbox_batch_size, block_ms=block_ms)
        if entries:
            process(entries)
            entries, busy = [], True
            if time.monotonic() > deadline:
                enqueue_drain(ctx.redis, settings.queue_name)  # the flag stays held for it
                break
            continue
        ctx.inbox.forget_drain_request()
        entries = ctx.inbox.read_new(consumer, settings.inbox_batch_size)
        if not entries:
            break
        if not ctx.inbox.claim_drain_request(hold_seconds):
            process(entries)  # a receiver has queued a new drain: it takes over after these
            break
    relay(ctx)  # whatever else is waiting: API changes, a relay that died midway
    # Deliveries due with no pump scheduled (workers restarted, no clock yet).
    ensure_pump(ctx)
    return totals


def _decode(entry: StreamEntry) -> CodatEvent:
    try:
        body = json.loads(entry.fields.get(b"body", b""))
    except ValueError as exc:
        raise InvalidEvent(f"body is not JSON: {exc}") from exc
    return parse_codat_event(body)


def _log_applied(applied, events_by_company, entry_ids_by_company, webhook_ids) -> None:
    """`event.applied` per event and `company.transition` per transition committed."""
    for company_id, outcome in applied.outcomes.items():
        by_event_id = {}  # the webhook that caused each transition, for its log line
        for event, entry_id in zip(
            events_by_company[company_id], entry_ids_by_company[company_id], strict=True
        ):
            by_event_id[event.id] = entry_id
            log.info(
                "event.applied",
                webhook_id=webhook_ids[entry_id],
                event_id=event.id,
                event_type=event.type,
                company_id=company_id,
                state=outcome.state.value,
            )
        for transition in outcome.transitions:
            log.info(
                "company.transition",
                company_id=company_id,
                from_state=transition.from_state.value,
                to_state=transition.to_state.value,
                event_id=transition.cause_event_id,
                event_type=transition.cause_event_type,
                webhook_id=webhook_ids.get(by_event_id.get(transition.cause_event_id)),
            )


def process_entries(ctx: Services, entries: Sequence[StreamEntry]) -> dict[str, int]:
    """Apply one batch. Returns counts by outcome."""
    events_by_company: dict[str, list[CodatEvent]] = defaultdict(list)
    entry_ids_by_company: dict[str, list[bytes]] = defaultdict(list)
    ignored: list[tuple[StreamEntry, CodatEvent]] = []
    rejected: list[tuple[StreamEntry, str]] = []
    decoded: list[tuple[StreamEntry, CodatEvent]] = []
    # client.rateLimit.* (no company): stored and acknowledged like any ignored
    # event, and they pause or resume reconciliation (journey/rate_limit.py).
    signals: list[tuple[StreamEntry, RateLimitSignal]] = []

    for entry in entries:
        try:
            event = _decode(entry)
        except InvalidEvent as exc:
            rejected.append((entry, str(exc)))
            continue
        decoded.append((entry, event))
        if not event.handled:
            ignored.append((entry, event))
            signal = signal_of(event.type, event.id, entry.fields.get(b"body"))
            if signal is not None:
                signals.append((entry, signal))
            continue
        assert event.company_id is not None  # parse_codat_event guarantees it
        events_by_company[event.company_id].append(event)
        entry_ids_by_company[event.company_id].append(entry.entry_id)

    for entry, reason in rejected:
        log.error("inbox.rejected", webhook_id=webhook_id_of(entry), reason=reason)
    ctx.inbox.dead_letter(rejected)

    def acknowledge_with_state(pipe, committed: set[str]) -> None:
        ids = [i for cid in committed for i in entry_ids_by_company[cid]]
        for entry, event in ignored:
            pipe.xadd(
                ctx.inbox.keys.ignored_events,
                {
                    "webhook_id": webhook_id_of(entry),
                    "event_type": event.type,
                    "company_id": event.company_id or "",
                    "event_id": event.id,
                },
                maxlen=IGNORED_EVENTS_MAXLEN,
                approximate=True,
            )
            pipe.hincrby(ctx.inbox.keys.ignored_counts, event.type, 1)
            ids.append(entry.entry_id)
        for _entry, signal in signals:
            queue_signal(pipe, ctx.inbox.keys, signal, time.time())
        ctx.inbox.acknowledge(pipe, ids)

    applied = ctx.updates.apply(events_by_company, also=acknowledge_with_state)
    committed_ms = int(time.time() * 1000)

    webhook_ids = {e.entry_id: webhook_id_of(e) for e in entries}
    _log_applied(applied, events_by_company, entry_ids_by_company, webhook_ids)
    for entry, event in ignored:
        log.info(
            "event.ignored",
            webhook_id=webhook_id_of(entry),
            event_type=event.type,
            company_id=event.company_id,
        )
    for entry, signal in signals:
        report_signal(ctx.redis, ctx.store.keys.prefix, signal, webhook_id_of(entry))
    for company_id in applied.erased:  # acknowledged with the others, applied to nothing
        log.info(
            "event.ignored",
            reason="company_erased",
            company_id=company_id,
            webhook_ids=[webhook_ids[i] for i in entry_ids_by_company[company_id]],
        )
    for company_id, exc in applied.failed.items():
        log.error(
            "event.apply_failed",
            company_id=company_id,
            webhook_ids=[webhook_ids[i] for i in entry_ids_by_company[company_id]],
            error=repr(exc),
        )
    counts = {
        "notifications": sum(len(n) for n in applied.notifications.values()),
        "applied": sum(len(events_by_company[c]) for c in applied.outcomes),
        "ignored": len(ignored) + sum(len(events_by_company[c]) for c in applied.erased),
        "rejected": len(rejected),
        "failed": sum(len(events_by_company[c]) for c in applied.failed),
    }
    # codat_authflow/observability/metrics.py: inbox outcomes, receipt-to-commit times
    record_drain(
        ctx.redis, ctx.store.keys.prefix, entries, events_by_company, entry_ids_by_company,
        applied, counts, now_ms=committed_ms, unknown=_count_unknown_values(decoded),
    )  # fmt: skip
    return counts
