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
  `INBOX_VISIBILITY_TIMEOUT_SECONDS` (see codat_authflow/storage/streams.py).

RQ still runs the drain jobs (and the dashboard shows them); the receiver asks
for one only when none is already queued.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis
from redis.exceptions import NoScriptError

from codat_authflow.storage.keys import INBOX_GROUP, Keys
from codat_authflow.storage.raw_command import ThreadConnections
from codat_authflow.storage.streams import StreamEntry, StreamQueue

# KEYS: seen-id key, inbox stream, drain-scheduled flag[, counter hash]
# ARGV: dedupe TTL (s), webhook id, received-at (ms), body, drain flag TTL (s)
#       [, counter field for "queued", counter field for "duplicate"]
_ACCEPT_SCRIPT = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  if KEYS[4] then redis.call('HINCRBY', KEYS[4], ARGV[7], 1) end
  return {0, 0}
end
redis.call('XADD', KEYS[2], '*', 'webhook_id', ARGV[2], 'received_at', ARGV[3], 'body', ARGV[4])
if KEYS[4] then redis.call('HINCRBY', KEYS[4], ARGV[6], 1) end
if redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[5]) then
  return {1, 1}
end
return {1, 0}
"""

DRAIN_FLAG_TTL_SECONDS = 30


@dataclass(frozen=True)
class OutcomeCounter:
    """Where `accept` counts its outcomes: a hash and its two fields."""

    key: str
    queued_field: str
    duplicate_field: str


@dataclass(frozen=True)
class Acceptance:
    queued: bool  # False: the webhook id was already accepted (duplicate)
    drain_needed: bool  # True: no drain job is known to be queued; enqueue one
    replicas_acked: int | None = None  # replicas that had it (None: not asked)


def webhook_id_of(entry: StreamEntry) -> str:
    return entry.text("webhook_id")


class Inbox(StreamQueue):
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        dedupe_ttl_seconds: int = 72 * 3600,
        outcome_counter: OutcomeCounter | None = None,
    ):
        super().__init__(redis, keys.inbox, INBOX_GROUP, keys.dead_letters)
        self.keys = keys
        self.dedupe_ttl_seconds = dedupe_ttl_seconds
        self.outcome_counter = outcome_counter
        self._accept = redis.register_script(_ACCEPT_SCRIPT)
        self._hot_path = ThreadConnections(redis.connection_pool)  # why: in raw_command

    def accept(
        self,
        webhook_id: str,
        body: bytes,
        received_at_ms: int,
        *,
        replicas: int = 0,
        replica_timeout_ms: int = 0,
    ) -> Acceptance:
        """Remember the id and store the body, atomically; or report a duplicate.
        With an `outcome_counter`, the outcome is counted in the same call (the
        receiver's hot path makes one round trip to Redis, not two), unless
        the caller waits for replicas: then a 2xx is only known after WAIT, and
        the caller counts what it answered.

        `replicas` > 0: then `WAIT replicas replica_timeout_ms` in the same
        round trip, on the same connection (WAIT waits for that connection's
        own writes), and `replicas_acked` says how many replicas have them.
        A duplicate waits too: the script's counter increment is a write made
        after the original's, so its acknowledgement covers the original."""
        keys = [self.keys.seen(webhook_id), self.keys.inbox, self.keys.drain_scheduled]
        args = [self.dedupe_ttl_seconds, webhook_id, received_at_ms, body, DRAIN_FLAG_TTL_SECONDS]
        if self.outcome_counter is not None and replicas <= 0:
            keys.append(self.outcome_counter.key)
            args += [self.outcome_counter.queued_field, self.outcome_counter.duplicate_field]
        if replicas <= 0:
            try:
                queued, drain_needed = self._hot_path.execute(
                    "EVALSHA", self._accept.sha, len(keys), *keys, *args
                )
            except NoScriptError:  # a restarted or new Redis: redis-py's Script loads it
                queued, drain_needed = self._accept(keys=keys, args=args)
            return Acceptance(queued=bool(queued), drain_needed=bool(drain_needed))
        with self.redis.pipeline(transaction=False) as pipe:
            self._accept(keys=keys, args=args, client=pipe)
            pipe.wait(replicas, replica_timeout_ms)
            (queued, drain_needed), acked = pipe.execute()
        return Acceptance(
            queued=bool(queued), drain_needed=bool(drain_needed), replicas_acked=int(acked)
        )

    # The drain-scheduled flag: set, a receiver need not queue a drain job.
    # The receiver sets it (SET NX) when it queues one; the running drain
    # keeps it set while it reads, and releases it when the inbox is idle.

    def hold_drain_request(self, seconds: int) -> None:
        self.redis.set(self.keys.drain_scheduled, "1", ex=seconds)

    def claim_drain_request(self, seconds: int) -> bool:
        """Set the flag unless someone else did (then a drain is queued)."""
        return bool(self.redis.set(self.keys.drain_scheduled, "1", ex=seconds, nx=True))

    def forget_drain_request(self) -> None:
        self.redis.delete(self.keys.drain_scheduled)
