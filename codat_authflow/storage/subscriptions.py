"""Downstream subscriptions, one Redis hash each.

Fields are written one at a time (HSET), so the delivery workers recording
failures and the API changing the URL never overwrite each other.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from redis import Redis
from redis.exceptions import WatchError

from codat_authflow.storage.keys import Keys

SECRET_GRACE_SECONDS = 24 * 3600
DISABLE_AFTER_FAILING_SECONDS = 5 * 24 * 3600


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass(frozen=True)
class SigningSecret:
    secret: str
    created_at: float
    expires_at: float | None = None  # set when rotated out

    def active(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at


@dataclass(frozen=True)
class Subscription:
    id: str
    url: str
    event_types: tuple[str, ...]
    description: str | None
    secrets: tuple[SigningSecret, ...]
    created_at: float
    enabled: bool
    disabled_reason: str | None = None
    failing_since: float | None = None
    # The circuit breaker (codat_authflow/delivery/pump.py): consecutive failed
    # attempts, and until when no attempt is made (set when it opened).
    breaker_failures: int = 0
    breaker_open_until: float | None = None

    def breaker_state(self, now: float) -> str:
        """closed; open (no attempt until `breaker_open_until`); half_open
        (the cool-down is over: one probe at a time until one succeeds)."""
        if self.breaker_open_until is None:
            return "closed"
        return "open" if now < self.breaker_open_until else "half_open"

    def wants(self, event_type: str) -> bool:
        return "*" in self.event_types or event_type in self.event_types

    def signing_secrets(self, now: float) -> list[str]:
        """The current secret first, then any rotated-out one still in its grace period."""
        return [s.secret for s in self.secrets if s.active(now)]


def _secrets_json(values: Iterable[SigningSecret]) -> str:
    return json.dumps(
        [{"secret": s.secret, "createdAt": s.created_at, "expiresAt": s.expires_at} for s in values]
    )


# KEYS: the subscription's hash. ARGV: threshold, open until.
_BREAKER_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local failures = redis.call('HINCRBY', KEYS[1], 'breaker_failures', 1)
if failures >= tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'breaker_open_until', ARGV[2])
  return ARGV[2]
end
return false
"""


class SubscriptionStore:
    def __init__(self, redis: Redis, keys: Keys):
        self.redis = redis
        self.keys = keys
        self._breaker = redis.register_script(_BREAKER_SCRIPT)

    def _key(self, subscription_id: str) -> str:
        return self.keys.subscription(subscription_id)

    @property
    def _index(self) -> str:
        return self.keys.subscriptions

    def create(
        self, url: str, event_types: Iterable[str], description: str | None = None
    ) -> Subscription:
        now = time.time()
        subscription_id = f"sub_{uuid.uuid4().hex}"
        secret = SigningSecret(new_secret(), now)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                self._key(subscription_id),
                mapping={
                    "url": url,
                    "event_types": json.dumps(sorted(set(event_types))),
                    "description": description or "",
                    "secrets": _secrets_json([secret]),
                    "created_at": now,
                    "enabled": "1",
                },
            )
            pipe.zadd(self._index, {subscription_id: now})
            pipe.execute()
        return self._created(subscription_id)

    def get(self, subscription_id: str) -> Subscription | None:
        raw = self.redis.hgetall(self._key(subscription_id))
        return self._decode(subscription_id, raw) if raw else None

    def all(self) -> list[Subscription]:
        ids = [i.decode() for i in self.redis.zrange(self._index, 0, -1)]
        with self.redis.pipeline(transaction=False) as pipe:
            for subscription_id in ids:
                pipe.hgetall(self._key(subscription_id))
            raws = pipe.execute()
        return [self._decode(i, raw) for i, raw in zip(ids, raws, strict=True) if raw]

    def delete(self, subscription_id: str) -> bool:
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._key(subscription_id))
            pipe.zrem(self._index, subscription_id)
            deleted, _ = pipe.execute()
        return bool(deleted)

    def update(
        self,
        subscription_id: str,
        *,
        url: str | None = None,
        event_types: Iterable[str] | None = None,
        description: str | None = None,
        enabled: bool | None = None,
    ) -> Subscription | None:
        changes: dict[str, str] = {}
        if url is not None:
            changes["url"] = url
        if event_types is not None:
            changes["event_types"] = json.dumps(sorted(set(event_types)))
        if description is not None:
            changes["description"] = description
        if enabled is not None:
            changes["enabled"] = "1" if enabled else "0"
        key = self._key(subscription_id)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.exists(key)
            if changes:
                # HSET would recreate a deleted subscription; only touch an existing one.
                pipe.eval(
                    "if redis.call('EXISTS', KEYS[1]) == 1 then "
                    "return redis.call('HSET', KEYS[1], unpack(ARGV)) end return 0",
                    1,
                    key,
                    *[item for pair in changes.items() for item in pair],
                )
            if enabled:
                pipe.hdel(
                    key,
                    "disabled_reason",
                    "failing_since",
                    "breaker_failures",
                    "breaker_open_until",
                )
            exists = pipe.execute()[0]
        return self.get(subscription_id) if exists else None

    def _created(self, subscription_id: str) -> Subscription:
        """A subscription just written in our own transaction."""
        subscription = self.get(subscription_id)
        if subscription is None:  # deleted by another request in between
            raise KeyError(subscription_id)
        return subscription

    def rotate_secret(self, subscription_id: str) -> tuple[Subscription, str] | None:
        """A new current secret; the previous ones keep signing for 24 h."""
        key = self._key(subscription_id)
        with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)
                    current = self.get(subscription_id)
                    if current is None:
                        pipe.reset()
                        return None
                    now = time.time()
                    fresh = SigningSecret(new_secret(), now)
                    kept = [
                        SigningSecret(
                            s.secret, s.created_at, s.expires_at or now + SECRET_GRACE_SECONDS
                        )
                        for s in current.secrets
                        if s.active(now)
                    ]
                    pipe.multi()
                    pipe.hset(key, "secrets", _secrets_json([fresh, *kept]))
                    pipe.execute()
                    rotated = self.get(subscription_id)
                    return (rotated, fresh.secret) if rotated is not None else None
                except WatchError:  # rotated concurrently; read again
                    continue

    def record_success(self, subscription_id: str, pipe=None) -> None:
        """A delivery succeeded: not failing any more, and the breaker closes."""
        (pipe or self.redis).hdel(
            self._key(subscription_id), "failing_since", "breaker_failures", "breaker_open_until"
        )

    def record_breaker_failure(
        self, subscription_id: str, now: float, *, threshold: int, cooldown_seconds: float
    ) -> float | None:
        """Count a consecutive failure; at `threshold` (and after each further
        failure, such as a failed probe) the breaker opens for
        `cooldown_seconds`. Returns until when it is open, or None."""
        key = self._key(subscription_id)
        opened = self._breaker(keys=[key], args=[threshold, repr(now + cooldown_seconds)])
        return float(opened) if opened else None

    def record_failure(self, subscription_id: str, now: float | None = None) -> bool:
        """Remember since when deliveries fail; disable the subscription after
        5 days of continuous failure. Returns True if it was just disabled."""
        now = time.time() if now is None else now
        key = self._key(subscription_id)
        if not self.redis.exists(key):
            return False
        self.redis.hsetnx(key, "failing_since", now)
        since = float(self.redis.hget(key, "failing_since") or now)
        if now - since < DISABLE_AFTER_FAILING_SECONDS:
            return False
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hget(key, "enabled")
            pipe.hset(
                key,
                mapping={
                    "enabled": "0",
                    "disabled_reason": "deliveries failed continuously for 5 days",
                },
            )
            was_enabled, _ = pipe.execute()
        return was_enabled == b"1"

    @staticmethod
    def _decode(subscription_id: str, raw: dict[bytes, bytes]) -> Subscription:
        def text(name: str) -> str | None:
            value = raw.get(name.encode())
            return value.decode() if value is not None else None

        return Subscription(
            id=subscription_id,
            url=text("url") or "",
            event_types=tuple(json.loads(text("event_types") or "[]")),
            description=text("description") or None,
            secrets=tuple(
                SigningSecret(s["secret"], s["createdAt"], s.get("expiresAt"))
                for s in json.loads(text("secrets") or "[]")
            ),
            created_at=float(text("created_at") or 0),
            enabled=text("enabled") == "1",
            disabled_reason=text("disabled_reason"),
            failing_since=float(since) if (since := text("failing_since")) else None,
            breaker_failures=int(text("breaker_failures") or 0),
            breaker_open_until=float(until) if (until := text("breaker_open_until")) else None,
        )
