"""Codat's rate limit, as it affects the calls we make on our own initiative.

Codat tells us our client is over its quota in two ways: a 429 answer (with
`Retry-After`) to any call, and the `client.rateLimit.reached` webhook (Codat's
`ClientRateLimitWebhook`: payload `dailyQuota`, `quotaRemaining`,
`expiryDate`, "the date time in UTC when your daily quota is reset"), followed
by `client.rateLimit.reset` when the quota is back. These are not company
events: the drain stores and acknowledges them like any event it does not
apply to a company, and routes them here.

Reconciliation (`journey.reconcile`) is the one caller that can wait, so it is
the one that pauses: `{p}:codat:rate-limit` (a hash, `Keys.codat_rate_limit`)
holds `pausedUntil` (epoch seconds) and why. It is set

* by a 429 to any of our calls: until now + `Retry-After` (never shortened);
* by `client.rateLimit.reached`: until its `expiryDate` (an hour when it has
  none; never more than a day and an hour ahead);

and cleared by `client.rateLimit.reset`. Codat's webhooks come in any order,
so a `reached` generated before the latest `reset` already seen is stale and
pauses nothing, and a `reset` clears only a pause whose `reached` is older
than it. The host application's own calls are never held back: they answer
503 with `Retry-After`, and the host decides.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError

from codat_authflow.observability.metrics import CODAT_RATE_LIMIT, increment
from codat_authflow.storage.keys import Keys
from state_machine.events import (
    InvalidEvent,
    canonical_timestamp,
    format_timestamp,
    timestamp_seconds,
)

log = structlog.get_logger(__name__)

REACHED = "client.rateLimit.reached"
RESET = "client.rateLimit.reset"
RATE_LIMIT_EVENTS = frozenset({REACHED, RESET})

#: A `reached` without a usable `expiryDate` pauses this long.
FALLBACK_PAUSE_SECONDS = 3600
#: Codat's quota is daily: an `expiryDate` further ahead than this is capped.
MAX_PAUSE_SECONDS = 25 * 3600
#: The hash outlives its pause, to remember the latest `reset` seen.
KEEP_SECONDS = 8 * 24 * 3600

# KEYS[1]: the hash. ARGV: kind ("reached", "reset", "retry_after"), the
# event's generatedDate (canonical, compared as text; "" for a 429), the
# pause's end in epoch seconds ("" for reset), the reason, details (JSON),
# how long to keep the hash. Returns 1 if the pause changed, else 0.
_SIGNAL = """
local key, kind, generated = KEYS[1], ARGV[1], ARGV[2]
local last_reset = redis.call('HGET', key, 'resetGeneratedAt')
local changed = 0
if kind == 'reset' then
  if (not last_reset) or generated > last_reset then
    redis.call('HSET', key, 'resetGeneratedAt', generated)
  end
  local reached = redis.call('HGET', key, 'reachedGeneratedAt')
  if redis.call('HEXISTS', key, 'pausedUntil') == 1 and ((not reached) or reached <= generated) then
    redis.call('HDEL', key, 'pausedUntil', 'reason', 'details', 'reachedGeneratedAt')
    changed = 1
  end
else
  if kind == 'reached' and last_reset and last_reset >= generated then
    return 0
  end
  local current = tonumber(redis.call('HGET', key, 'pausedUntil') or '0')
  if tonumber(ARGV[3]) > current then
    redis.call('HSET', key, 'pausedUntil', ARGV[3], 'reason', ARGV[4], 'details', ARGV[5])
    if kind == 'reached' then
      redis.call('HSET', key, 'reachedGeneratedAt', generated)
    end
    changed = 1
  end
end
redis.call('EXPIRE', key, ARGV[6])
return changed
"""


@dataclass(frozen=True)
class RateLimitSignal:
    """One `client.rateLimit.*` webhook, as far as it could be read."""

    kind: str  # "reached" or "reset"
    event_id: str
    generated_at: str  # canonical; "" if unreadable
    expiry_date: str | None  # as Codat sent it
    daily_quota: Any = None
    quota_remaining: Any = None

    def pause_until(self, now: float) -> float:
        """When reconciliation may call Codat again after this `reached`."""
        expiry = timestamp_seconds(self.expiry_date) if self.expiry_date else None
        if expiry is None:
            return now + FALLBACK_PAUSE_SECONDS
        return min(expiry, now + MAX_PAUSE_SECONDS)

    def details(self) -> dict[str, Any]:
        return {
            "eventId": self.event_id,
            "generatedDate": self.generated_at or None,
            "expiryDate": self.expiry_date,
            "dailyQuota": self.daily_quota,
            "quotaRemaining": self.quota_remaining,
        }


@dataclass(frozen=True)
class Pause:
    until: float
    reason: str  # "rate_limit_reached" or "retry_after"
    details: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "pausedUntil": format_timestamp_seconds(self.until),
            "reason": self.reason,
            **({"details": self.details} if self.details else {}),
        }


def format_timestamp_seconds(seconds: float) -> str:
    return format_timestamp(datetime.fromtimestamp(seconds, UTC))


def signal_of(event_type: str, event_id: str, raw_body: bytes | None) -> RateLimitSignal | None:
    """The signal a drained inbox entry carries, or None if it is not a
    `client.rateLimit.*` event. Never raises: whatever cannot be read is
    left out (the event is stored and acknowledged regardless)."""
    if event_type not in RATE_LIMIT_EVENTS:
        return None
    try:
        body = json.loads(raw_body or b"")
    except ValueError:
        body = {}
    body = body if isinstance(body, Mapping) else {}
    payload = body.get("payload")
    payload = payload if isinstance(payload, Mapping) else {}
    try:
        generated_at = canonical_timestamp(body.get("generatedDate"))
    except InvalidEvent:
        generated_at = ""
    expiry = payload.get("expiryDate")
    return RateLimitSignal(
        kind="reached" if event_type == REACHED else "reset",
        event_id=event_id,
        generated_at=generated_at,
        expiry_date=expiry[:40] if isinstance(expiry, str) else None,
        daily_quota=_number(payload.get("dailyQuota")),
        quota_remaining=_number(payload.get("quotaRemaining")),
    )


def _number(value: Any) -> int | float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def queue_signal(pipe: Pipeline, keys: Keys, signal: RateLimitSignal, now: float) -> None:
    """Queue the pause change of a drained webhook on `pipe` (the drain's MULTI)."""
    until = signal.pause_until(now) if signal.kind == "reached" else 0
    pipe.eval(
        _SIGNAL,
        1,
        keys.codat_rate_limit,
        signal.kind,
        signal.generated_at,
        repr(until),
        "rate_limit_reached",
        json.dumps(signal.details(), separators=(",", ":")),
        KEEP_SECONDS,
    )


def report_signal(redis: Redis, prefix: str, signal: RateLimitSignal, webhook_id: str) -> None:
    """The log line and the metric of a committed signal."""
    increment(redis, prefix, CODAT_RATE_LIMIT, signal.kind)
    fields = {"webhook_id": webhook_id, **signal.details()}
    if signal.kind == "reached":
        log.warning(
            "codat.rate_limit.reached",
            reconciliation_paused_until=format_timestamp_seconds(signal.pause_until(time.time())),
            **fields,
        )
    else:
        log.info("codat.rate_limit.reset", reconciliation="resumed", **fields)


def back_off(
    redis: Redis,
    keys: Keys,
    retry_after_seconds: int,
    *,
    operation: str,
    now: float | None = None,
) -> None:
    """A call got 429: reconciliation waits `Retry-After`. Never raises."""
    now = time.time() if now is None else now
    until = now + max(1, retry_after_seconds)
    details = {"operation": operation, "retryAfterSeconds": retry_after_seconds}
    try:
        redis.eval(
            _SIGNAL,
            1,
            keys.codat_rate_limit,
            "retry_after",
            "",
            repr(until),
            "retry_after",
            json.dumps(details, separators=(",", ":")),
            KEEP_SECONDS,
        )
    except RedisError as exc:
        log.warning("codat.rate_limit.not_recorded", error=repr(exc))
    increment(redis, keys.prefix, CODAT_RATE_LIMIT, "http_429")
    log.warning(
        "codat.rate_limit.http_429",
        operation=operation,
        retry_after_seconds=retry_after_seconds,
        reconciliation_paused_until=format_timestamp_seconds(until),
    )


def current_pause(redis: Redis, keys: Keys, now: float | None = None) -> Pause | None:
    """The pause in force, if any."""
    now = time.time() if now is None else now
    raw = redis.hmget(keys.codat_rate_limit, ["pausedUntil", "reason", "details"])
    try:
        until = float(raw[0]) if raw[0] is not None else 0.0
    except ValueError:
        return None
    if until <= now:
        return None
    try:
        details = json.loads(raw[2]) if raw[2] else {}
    except ValueError:
        details = {}
    reason = raw[1].decode() if isinstance(raw[1], bytes) else str(raw[1] or "")
    return Pause(until=until, reason=reason, details=details if isinstance(details, dict) else {})


__all__ = [
    "RATE_LIMIT_EVENTS",
    "Pause",
    "RateLimitSignal",
    "back_off",
    "current_pause",
    "queue_signal",
    "report_signal",
    "signal_of",
]
