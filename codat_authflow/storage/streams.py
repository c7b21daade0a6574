"""A Redis stream with one consumer group, used as a reliable work queue.

Shared by the webhook inbox and the notification outbox. An entry is read by
one consumer, stays pending until acknowledged, and is claimed by another
consumer once it has been pending longer than a visibility timeout (its
worker died). Acknowledged entries are deleted, so the stream holds only
work not yet done. Entries delivered too many times go to a dead-letter
stream rather than blocking the queue forever.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import ResponseError

DEAD_LETTER_MAXLEN = 10_000


def consumer_name() -> str:
    """A stable name per worker process, so its pending entries can be found."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class StreamEntry:
    entry_id: bytes
    fields: dict[bytes, bytes]

    def text(self, name: str, default: str = "") -> str:
        value = self.fields.get(name.encode())
        return value.decode() if value is not None else default


def _entries(raw: Iterable) -> list[StreamEntry]:
    # An entry deleted while pending comes back with no fields: nothing to do.
    return [StreamEntry(entry_id, fields) for entry_id, fields in raw if fields]


class StreamQueue:
    def __init__(self, redis: Redis, stream: str, group: str, dead_letters: str):
        self.redis = redis
        self.stream = stream
        self.group = group
        self.dead_letters = dead_letters

    def ensure_group(self) -> None:
        try:
            self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _with_group(self, call):
        try:
            return call()
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # The stream or group vanished (a Redis without persistence
            # restarted): recreate from the start of the stream and retry.
            self.ensure_group()
            return call()

    def read_new(
        self, consumer: str, count: int, *, block_ms: int | None = None
    ) -> list[StreamEntry]:
        """Entries never delivered to anyone; with `block_ms`, wait that long
        for some to arrive if there are none."""
        raw = self._with_group(
            lambda: self.redis.xreadgroup(
                self.group, consumer, {self.stream: ">"}, count=count, block=block_ms
            )
        )
        return _entries(raw[0][1]) if raw else []

    def reclaim_abandoned(
        self, consumer: str, *, min_idle_ms: int, max_deliveries: int, count: int
    ) -> list[StreamEntry]:
        """Claim entries left pending longer than `min_idle_ms`; those already
        delivered `max_deliveries` times go to the dead-letter stream."""
        pending = self._with_group(
            lambda: self.redis.xpending_range(
                self.stream, self.group, min="-", max="+", count=count, idle=min_idle_ms
            )
        )
        if not pending:
            return []
        poison = [p["message_id"] for p in pending if p["times_delivered"] >= max_deliveries]
        retry = [p["message_id"] for p in pending if p["times_delivered"] < max_deliveries]
        if poison:
            claimed = _entries(
                self.redis.xclaim(self.stream, self.group, consumer, min_idle_ms, poison)
            )
            reason = f"not applied after {max_deliveries} deliveries"
            self.dead_letter([(entry, reason) for entry in claimed])
        if not retry:
            return []
        return _entries(self.redis.xclaim(self.stream, self.group, consumer, min_idle_ms, retry))

    def acknowledge(self, pipe: Pipeline, entry_ids: Sequence[bytes]) -> None:
        """Queue the acknowledgement on `pipe`, to commit with the work it finished."""
        if entry_ids:
            pipe.xack(self.stream, self.group, *entry_ids)
            pipe.xdel(self.stream, *entry_ids)

    def dead_letter(self, entries: Sequence[tuple[StreamEntry, str]]) -> None:
        """Set entries aside, with the reason they cannot be processed."""
        if not entries:
            return
        with self.redis.pipeline(transaction=True) as pipe:
            for entry, reason in entries:
                pipe.xadd(
                    self.dead_letters,
                    {**entry.fields, b"reason": reason[:500].encode()},
                    maxlen=DEAD_LETTER_MAXLEN,
                    approximate=True,
                )
            self.acknowledge(pipe, [entry.entry_id for entry, _ in entries])
            pipe.execute()

    def backlog(self) -> int:
        """Entries stored and not yet acknowledged (new or pending)."""
        return int(self.redis.xlen(self.stream))
