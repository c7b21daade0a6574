"""The delivery pump: one RQ job that sends due deliveries, many at once.

Like the inbox's drain: the relay puts new deliveries in the schedule
(`{p}:deliveries:pending`, in its own transaction) and queues a pump only if
none is scheduled (the pump-scheduled flag, SET NX); the clock's sweep does
the same when a retry comes due and no pump runs. A pump:

* claims due deliveries with one Lua script (DeliveryStore.claim): each is
  leased (re-scored to now + LEASE_SECONDS) and its start recorded, so a pump
  killed mid-attempt loses nothing: the lease ends, the next claim finds the
  unfinished attempt and counts it as failed (`interrupted`);
* sends them concurrently, on a thread pool of DELIVERY_CONCURRENCY, claiming
  more whenever a thread is free: a subscriber that hangs holds only its own
  attempts, never a whole batch;
* isolates subscribers: at most DELIVERY_MAX_IN_FLIGHT_PER_SUBSCRIPTION
  attempts in flight per subscription, and a circuit breaker that opens after
  DELIVERY_BREAKER_FAILURES consecutive failures (timeouts included) for
  DELIVERY_BREAKER_COOLDOWN_SECONDS, then lets one probe through. A delivery
  of a subscription at its limit or with its breaker open goes back in the
  schedule, due later, without counting an attempt;
* records results in bulk (attempts.commit: one transaction for whatever
  finished together), keeps going while work comes (DELIVERY_PUMP_IDLE_MS),
  and after DELIVERY_PUMP_MAX_SECONDS queues its successor and returns,
  leaving attempts still in flight to record themselves when they end.

The in-flight limit is counted by each pump; normally one runs at a time (the
flag), briefly two at a hand-over.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict, deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace

import httpx
import structlog

from codat_authflow.bootstrap import Services
from codat_authflow.delivery.attempts import (
    LEASE_SECONDS,
    PUMP_FLAG_TTL_SECONDS,
    Settled,
    commit,
    interrupted_attempt,
    make_attempt,
    metric_updates,
    record_failures,
    schedule_wakeup,
    settle_attempt,
    settle_before_attempt,
)
from codat_authflow.delivery.sender import TOTAL_TIMEOUT_SECONDS
from codat_authflow.jobs import enqueue_pump
from codat_authflow.observability.metrics import write
from codat_authflow.storage.deliveries import Delivery
from codat_authflow.storage.subscriptions import Subscription

log = structlog.get_logger(__name__)

# How often a pump looks for due deliveries: every POLL_SECONDS while it finds
# some, backing off to POLL_MAX_SECONDS while it finds none.
POLL_SECONDS, POLL_MAX_SECONDS = 0.02, 0.05
METRICS_FLUSH_SECONDS = 1.0
SUBSCRIPTIONS_REFRESH_SECONDS = 1.0
FLAG_REFRESH_SECONDS = 3.0
# A delivery whose subscription is at its limit is due again after about as
# long as its oldest attempt in flight has been running, within these bounds.
AT_LIMIT_DEFER_MIN, AT_LIMIT_DEFER_MAX = 0.25, 2.0
SUBSCRIPTION_OF_MAX = 100_000
CLAIM_AT_LEAST = 64
# Deliveries of a busy subscription (at its limit) kept by the pump for its
# next free slot, at most this many and this long (well within the lease).
HOLD_PER_SUBSCRIPTION = 32
HOLD_SECONDS = 5.0


@dataclass
class _InFlight:
    delivery: Delivery
    started: float  # monotonic


@dataclass
class PumpStats:
    claimed: int = 0
    sent: int = 0
    deferred: int = 0
    settled: dict[str, int] = field(default_factory=lambda: defaultdict(int))


class Pump:
    def __init__(self, ctx: Services, client: httpx.Client):
        self.ctx = ctx
        self.settings = ctx.settings
        self.client = client
        self.executor = ThreadPoolExecutor(
            self.settings.delivery_concurrency, thread_name_prefix="delivery"
        )
        self.in_flight: dict[Future, _InFlight] = {}
        self.per_subscription: dict[str, list[float]] = defaultdict(list)  # start times
        self.subscriptions: dict[str, Subscription] = {}
        self.subscriptions_at = 0.0
        self.subscription_of: dict[str, str] = {}  # delivery id -> subscription id
        self.saw_blocked = False  # the last claim held deliveries that had to wait
        self.held: dict[str, deque] = defaultdict(deque)  # claimed, waiting for a slot
        self.stats = PumpStats()
        self.uncounted: list = []  # metric updates not written yet
        self.counted_at = time.monotonic()

    # -- the loop ----------------------------------------------------------------

    def run(self) -> dict[str, int]:
        deadline = time.monotonic() + self.settings.delivery_pump_max_seconds
        idle_seconds = self.settings.delivery_pump_idle_ms / 1000
        self._hold_flag()
        flag_at = idle_since = time.monotonic()
        next_claim, poll = 0.0, POLL_SECONDS
        while True:
            now = time.monotonic()
            if now >= deadline:
                self._hand_over()
                break
            if now >= next_claim and len(self.in_flight) < self.settings.delivery_concurrency:
                found = self._claim_and_start()
                poll = POLL_SECONDS if found else min(POLL_MAX_SECONDS, poll * 1.5)
                next_claim = now if found == "full" else now + poll
            self._start_held()
            if self.in_flight:
                idle_since = now
                self._collect(max(0.0, min(next_claim, deadline) - time.monotonic()))
            elif now - idle_since >= idle_seconds:
                if self._release_flag(idle_seconds):
                    break
                idle_since = time.monotonic()
            else:
                time.sleep(max(0.0, next_claim - time.monotonic()))
            if time.monotonic() - flag_at >= FLAG_REFRESH_SECONDS:
                self._hold_flag()
                flag_at = time.monotonic()
            if time.monotonic() - self.counted_at >= METRICS_FLUSH_SECONDS:
                self._flush_metrics()
        self._give_back_held()
        self._flush_metrics()
        self.executor.shutdown(wait=False)
        return {
            "claimed": self.stats.claimed,
            "sent": self.stats.sent,
            "deferred": self.stats.deferred,
            **self.stats.settled,
        }

    def _flush_metrics(self) -> None:
        updates, self.uncounted = self.uncounted, []
        self.counted_at = time.monotonic()
        if updates:
            write(self.ctx.redis, updates)

    def _hold_flag(self) -> None:
        self.ctx.redis.set(self.ctx.store.keys.pump_scheduled, "1", ex=PUMP_FLAG_TTL_SECONDS)

    def _release_flag(self, idle_seconds: float) -> bool:
        """Idle: release the flag, then look once more (a delivery scheduled
        just before the release would wait for the sweep). True: stop."""
        flag = self.ctx.store.keys.pump_scheduled
        self.ctx.redis.delete(flag)
        due = self.ctx.deliveries.next_due()
        if due is None:
            return True
        if due > time.time() + idle_seconds:
            schedule_wakeup(self.ctx, due)
            return True
        # Due now or soon: carry on, unless someone queued a pump meanwhile.
        return not self.ctx.redis.set(flag, "1", nx=True, ex=PUMP_FLAG_TTL_SECONDS)

    def _hand_over(self) -> None:
        """Time is up: a fresh job takes over (the flag stays held for it);
        attempts still in flight record their own outcome when they end."""
        self._give_back_held()
        due = self.ctx.deliveries.next_due()
        if due is not None:
            self._hold_flag()
            enqueue_pump(self.ctx.redis, self.settings.delivery_queue_name)
        for future in list(self.in_flight):
            future.add_done_callback(self._record_late)

    def _record_late(self, future: Future) -> None:
        item = self.in_flight.pop(future, None)
        if item is None:  # already collected
            return
        try:
            self._settle_done([(future, item)], late=True)
        except Exception as exc:  # the lease ends and the attempt counts as interrupted
            log.error("delivery.record_failed", delivery_id=item.delivery.id, error=repr(exc))

    # -- claiming ----------------------------------------------------------------

    def _claim_and_start(self) -> str | None:
        """Claim as many due deliveries as there are free threads; start the
        ones their subscription allows, defer the others. "full" if the claim
        was full (more may be due at once), "some", or None."""
        free = self.settings.delivery_concurrency - len(self.in_flight)
        now = time.time()
        # More than the free threads: a backlog of deliveries that must wait
        # (a subscription at its limit or with its breaker open) is put back
        # in bulk, without holding up the others behind it.
        asked = max(free, CLAIM_AT_LEAST) if self.saw_blocked else free
        claimed = self.ctx.deliveries.claim(now, LEASE_SECONDS, asked)
        if not claimed:
            return None
        self.stats.claimed += len(claimed)
        self._refresh_subscriptions()
        deferred: dict[str, float] = {}
        # Known subscriptions first: blocked ones are deferred without a read,
        # and past the free threads the rest go back, due now.
        to_read = []
        blocked = 0
        for delivery_id_, previous in claimed:
            if previous is None:
                subscription_id = self.subscription_of.get(delivery_id_)
                until = self._blocked_until(subscription_id, now) if subscription_id else None
                if until is not None and self._can_hold(subscription_id, now):
                    until = None  # read it: it waits here for a slot of its subscription
                elif until is None and free <= 0:
                    until = now
                else:
                    free -= until is None
                blocked += until is not None and until > now
                if until is not None:
                    deferred[delivery_id_] = until
                    continue
            to_read.append((delivery_id_, previous))
        settled: list[Settled] = []
        if to_read:
            records = {d.id: d for d in self.ctx.deliveries.get_many(i for i, _ in to_read)}
            for delivery_id_, previous in to_read:
                outcome = self._start_or_settle(
                    records.get(delivery_id_), delivery_id_, previous, now, deferred
                )
                if outcome is not None:
                    settled.append(outcome)
        self._write_deferred_and_settled(deferred, settled, now)
        self.saw_blocked = blocked > 0
        # Claim again at once only if this claim was full of deliveries that could go.
        return "full" if len(claimed) >= asked and len(deferred) < len(claimed) else "some"

    def _start_or_settle(self, delivery, delivery_id_, previous, now, deferred):
        """One claimed delivery: gone or finished (dropped from the schedule),
        an interrupted attempt (counted), cancelled/dead, deferred or started."""
        if delivery is None or delivery.status != "pending":
            self.ctx.deliveries.unschedule(self.ctx.redis, [delivery_id_])
            return None
        self._remember(delivery)
        started = previous if previous is not None else delivery.attempt_started_at
        if started is not None:
            return settle_attempt(self.ctx, delivery, interrupted_attempt(started, now), now)
        subscription = self.subscriptions.get(delivery.subscription_id)
        settled = settle_before_attempt(delivery, subscription, now)
        if settled is not None:
            return settled
        until = self._blocked_until(delivery.subscription_id, now)
        if until is None and len(self.in_flight) < self.settings.delivery_concurrency:
            self._start(delivery, subscription)
        elif until is not None and self._can_hold(delivery.subscription_id, now):
            self.held[delivery.subscription_id].append((delivery, time.monotonic()))
        else:
            deferred[delivery.id] = until if until is not None else now
        return None

    def _can_hold(self, subscription_id: str, now: float) -> bool:
        """A subscription at its limit with a closed breaker (a busy, healthy
        one): a few of its deliveries wait here for its next free slot, instead
        of going back to the schedule and being claimed again and again."""
        subscription = self.subscriptions.get(subscription_id)
        return (
            subscription is not None
            and subscription.breaker_state(now) == "closed"
            and len(self.held.get(subscription_id, ())) < HOLD_PER_SUBSCRIPTION
        )

    def _start_held(self) -> None:
        """Start held deliveries whose subscription has a free slot; give back
        to the schedule those held too long (their subscription is slow), and
        all of a subscription whose breaker opened meanwhile."""
        if not self.held:
            return
        now, clock = time.time(), time.monotonic()
        back: dict[str, float] = {}
        for subscription_id in list(self.held):
            queue = self.held[subscription_id]
            subscription = self.subscriptions.get(subscription_id)
            if subscription is None or subscription.breaker_state(now) != "closed":
                until = self._blocked_until(subscription_id, now) or now
                back.update((d.id, until) for d, _ in queue)
                queue.clear()
            while queue and len(self.in_flight) < self.settings.delivery_concurrency:
                if self._blocked_until(subscription_id, now) is not None:
                    break
                delivery, _ = queue.popleft()
                self._start(delivery, subscription)
            while queue and clock - queue[0][1] > HOLD_SECONDS:
                back[queue.popleft()[0].id] = now + AT_LIMIT_DEFER_MAX
            if not queue:
                del self.held[subscription_id]
        self._defer(back)

    def _give_back_held(self) -> None:
        now = time.time()
        self._defer({d.id: now for queue in self.held.values() for d, _ in queue})
        self.held.clear()

    def _defer(self, until: dict[str, float]) -> None:
        if until:
            self.stats.deferred += len(until)
            with self.ctx.redis.pipeline(transaction=False) as pipe:
                self.ctx.deliveries.defer(pipe, until)
                pipe.execute()

    def _write_deferred_and_settled(self, deferred, settled, now) -> None:
        if deferred:
            self.stats.deferred += len(deferred)
            with self.ctx.redis.pipeline(transaction=False) as pipe:
                self.ctx.deliveries.defer(pipe, deferred)
                pipe.execute()
        if settled:
            self._commit(settled, now)

    def _remember(self, delivery: Delivery) -> None:
        if len(self.subscription_of) >= SUBSCRIPTION_OF_MAX:
            self.subscription_of.clear()
        self.subscription_of[delivery.id] = delivery.subscription_id

    def _refresh_subscriptions(self, force: bool = False) -> None:
        if force or time.monotonic() - self.subscriptions_at >= SUBSCRIPTIONS_REFRESH_SECONDS:
            self.subscriptions = {s.id: s for s in self.ctx.subscriptions.all()}
            self.subscriptions_at = time.monotonic()

    def _blocked_until(self, subscription_id: str, now: float) -> float | None:
        """When a delivery of this subscription may be tried again, if not now:
        its breaker is open, or it has its limit of attempts in flight (one, a
        probe, while the breaker is half open)."""
        subscription = self.subscriptions.get(subscription_id)
        if subscription is None:
            return None  # deleted or not seen yet: read, and cancelled if deleted
        state = subscription.breaker_state(now)
        if state == "open":  # spread, so that they do not all come due at once; when a
            # probe succeeds, they are all due again at once (`_commit`: resume)
            spread = self.settings.delivery_breaker_cooldown_seconds * random.uniform(0, 2)
            return subscription.breaker_open_until + spread
        limit = 1 if state == "half_open" else self.settings.delivery_max_in_flight
        starts = self.per_subscription.get(subscription_id)
        if not starts or len(starts) < limit:
            return None
        if state == "half_open":  # after the probe's outcome (resumed if it succeeds)
            return now + random.uniform(1, 2) * TOTAL_TIMEOUT_SECONDS
        running = time.monotonic() - min(starts)
        return now + min(AT_LIMIT_DEFER_MAX, max(AT_LIMIT_DEFER_MIN, running))

    def _start(self, delivery: Delivery, subscription: Subscription) -> None:
        started = time.monotonic()
        future = self.executor.submit(make_attempt, self.ctx, self.client, delivery, subscription)
        self.in_flight[future] = _InFlight(delivery, started)
        self.per_subscription[delivery.subscription_id].append(started)
        self.stats.sent += 1

    # -- results -----------------------------------------------------------------

    def _collect(self, timeout: float) -> None:
        done, _ = wait(list(self.in_flight), timeout=timeout, return_when=FIRST_COMPLETED)
        if not done:
            return
        # Whatever else finishes within a moment is recorded in the same transaction.
        finished = [(f, self.in_flight.pop(f)) for f in done]
        self._settle_done(finished)
        self._start_held()

    def _settle_done(self, finished: list[tuple[Future, _InFlight]], *, late=False) -> None:
        now = time.time()
        settled = []
        for future, item in finished:
            starts = self.per_subscription[item.delivery.subscription_id]
            if item.started in starts:
                starts.remove(item.started)
            try:
                attempt = future.result()
            except Exception as exc:  # a bug in sending: counted as a failed attempt
                log.error("delivery.send_error", delivery_id=item.delivery.id, error=repr(exc))
                attempt = interrupted_attempt(now, now)
            settled.append(settle_attempt(self.ctx, item.delivery, attempt, now))
        self._commit(settled, now, late=late)

    def _commit(self, settled: list[Settled], now: float, *, late: bool = False) -> None:
        # A success clears the subscription's failure state, if it has any as
        # far as this pump knows (its view is at most a second old, and
        # refreshed after every failure it records).
        succeeded = [
            s.delivery.subscription_id
            for s in settled
            if s.outcome == "delivered" and self._failing(s.delivery.subscription_id)
        ]
        commit(self.ctx, settled, succeeded=succeeded, count=late)
        if not late:
            self.uncounted += metric_updates(self.ctx, settled)
        for item in settled:
            self.stats.settled[item.outcome] += 1
        for subscription_id in set(succeeded):  # a breaker closed: its deliveries resume
            current = self.subscriptions.get(subscription_id)
            if current is None or current.breaker_open_until is not None:
                self.ctx.deliveries.resume(subscription_id, now)
        if any(s.failed_attempt for s in settled):
            record_failures(self.ctx, settled, now)
            self._refresh_subscriptions(force=True)  # the breaker may have opened
        elif succeeded:
            self._close_breakers(succeeded)

    def _failing(self, subscription_id: str) -> bool:
        current = self.subscriptions.get(subscription_id)
        return current is None or bool(
            current.failing_since or current.breaker_failures or current.breaker_open_until
        )

    def _close_breakers(self, subscription_ids: list[str]) -> None:
        for subscription_id in set(subscription_ids):
            current = self.subscriptions.get(subscription_id)
            if current is not None:
                self.subscriptions[subscription_id] = replace(
                    current, breaker_failures=0, breaker_open_until=None, failing_since=None
                )


def run_pump(ctx: Services, client: httpx.Client) -> dict[str, int]:
    return Pump(ctx, client).run()
