"""The webhook inbox: a Redis stream between the receiver and the workers.

Why a stream and not one RQ job per webhook:

* Accepting a webhook must be atomic. "Remember its id" and "store it for
  processing" happen in one Lua script, in one round trip, so a crash can
  neither store an event twice nor mark one as seen without storing it (which
  would turn Codat's retry into a "duplicate" and lose the event).
* RQ costs about 50 Redis round trips per job; a drain job reads up to
  `INBOX_BATCH_SIZE` events at once and commits them in a few round trips.
* Consumer groups give at-least-once processing for free: an entry stays
  pending until the transaction that applies it also acknowledges it, and an
  entry left pending by a killed worker is claimed again after
  `INBOX_VISIBILITY_TIMEOUT_SECONDS`.

RQ still runs the drain jobs (and the dashboard shows them); the receiver asks
for one only when none is already queued.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import ResponseError

from storage.keys import INBOX_GROUP, Keys

# KEYS: seen-id key, inbox stream, drain-scheduled flag
# ARGV: dedupe TTL (s), webhook id, received-at (ms), body, drain flag TTL (s)
_ACCEPT_SCRIPT = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  return {0, 0}
end
redis.call('XADD', KEYS[2], '*', 'webhook_id', ARGV[2], 'received_at', ARGV[3], 'body', ARGV[4])
if redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[5]) then
  return {1, 1}
end
return {1, 0}
"""

DRAIN_FLAG_TTL_SECONDS = 30
DEAD_LETTER_MAXLEN = 10_000


@dataclass(frozen=True)
class Acceptance:
    queued: bool  # False: the webhook id was already accepted (duplicate)
    drain_needed: bool  # True: no drain job is known to be queued; enqueue one


@dataclass(frozen=True)
class InboxEntry:
    entry_id: bytes
    webhook_id: str
    received_at_ms: int
    body: bytes


def consumer_name() -> str:
    """A stable name per worker process, so its pending entries can be found."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _entries(raw: Iterable) -> list[InboxEntry]:
    entries = []
    for entry_id, fields in raw:
        if not fields:  # deleted while pending; nothing left to apply
            continue
        entries.append(
            InboxEntry(
                entry_id=entry_id,
                webhook_id=fields.get(b"webhook_id", b"").decode(),
                received_at_ms=int(fields.get(b"received_at", b"0")),
                body=fields.get(b"body", b""),
            )
        )
    return entries


class Inbox:
    def __init__(self, redis: Redis, keys: Keys, *, dedupe_ttl_seconds: int = 72 * 3600):
        self.redis = redis
        self.keys = keys
        self.dedupe_ttl_seconds = dedupe_ttl_seconds
        self._accept = redis.register_script(_ACCEPT_SCRIPT)

    # Receiver side -----------------------------------------------------------

    def accept(self, webhook_id: str, body: bytes, received_at_ms: int) -> Acceptance:
        queued, drain_needed = self._accept(
            keys=[self.keys.seen(webhook_id), self.keys.inbox, self.keys.drain_scheduled],
            args=[
                self.dedupe_ttl_seconds,
                webhook_id,
                received_at_ms,
                body,
                DRAIN_FLAG_TTL_SECONDS,
            ],
        )
        return Acceptance(queued=bool(queued), drain_needed=bool(drain_needed))

    def forget_drain_request(self) -> None:
        """Called by a drain job as it starts: webhooks arriving from now on
        ask for a new job, so none waits behind a job that has finished reading."""
        self.redis.delete(self.keys.drain_scheduled)

    # Worker side -------------------------------------------------------------

    def ensure_group(self) -> None:
        try:
            self.redis.xgroup_create(self.keys.inbox, INBOX_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read_new(self, consumer: str, count: int) -> list[InboxEntry]:
        try:
            raw = self.redis.xreadgroup(INBOX_GROUP, consumer, {self.keys.inbox: ">"}, count=count)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # The stream or group vanished (a Redis without persistence
            # restarted). Recreate from the start of the stream and read again.
            self.ensure_group()
            raw = self.redis.xreadgroup(INBOX_GROUP, consumer, {self.keys.inbox: ">"}, count=count)
        return _entries(raw[0][1]) if raw else []

    def reclaim_abandoned(
        self, consumer: str, *, min_idle_ms: int, max_deliveries: int, count: int
    ) -> list[InboxEntry]:
        """Claim entries another consumer left pending for longer than
        `min_idle_ms` (its worker died). Entries already delivered
        `max_deliveries` times are moved to the dead-letter stream instead:
        one poison event must not block the inbox forever."""
        try:
            pending = self.redis.xpending_range(
                self.keys.inbox, INBOX_GROUP, min="-", max="+", count=count, idle=min_idle_ms
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self.ensure_group()
            return []
        if not pending:
            return []
        poison = [p["message_id"] for p in pending if p["times_delivered"] >= max_deliveries]
        retry = [p["message_id"] for p in pending if p["times_delivered"] < max_deliveries]
        if poison:
            claimed = _entries(
                self.redis.xclaim(self.keys.inbox, INBOX_GROUP, consumer, min_idle_ms, poison)
            )
            reason = f"not applied after {max_deliveries} deliveries"
            self.dead_letter([(entry, reason) for entry in claimed])
        if not retry:
            return []
        return _entries(
            self.redis.xclaim(self.keys.inbox, INBOX_GROUP, consumer, min_idle_ms, retry)
        )

    def acknowledge(self, pipe: Pipeline, entry_ids: Sequence[bytes]) -> None:
        """Queue the acknowledgement on `pipe`, so it commits with the state
        it produced. Acknowledged entries are deleted: the stream holds only
        work in progress."""
        if entry_ids:
            pipe.xack(self.keys.inbox, INBOX_GROUP, *entry_ids)
            pipe.xdel(self.keys.inbox, *entry_ids)

    def dead_letter(self, entries: Sequence[tuple[InboxEntry, str]]) -> None:
        """Set entries aside with the reason they cannot be applied."""
        if not entries:
            return
        with self.redis.pipeline(transaction=True) as pipe:
            for entry, reason in entries:
                pipe.xadd(
                    self.keys.dead_letters,
                    {
                        "webhook_id": entry.webhook_id,
                        "received_at": entry.received_at_ms,
                        "reason": reason[:500],
                        "body": entry.body,
                    },
                    maxlen=DEAD_LETTER_MAXLEN,
                    approximate=True,
                )
            self.acknowledge(pipe, [entry.entry_id for entry, _ in entries])
            pipe.execute()

    def backlog(self) -> int:
        """Entries stored and not yet applied (new or pending)."""
        return int(self.redis.xlen(self.keys.inbox))
