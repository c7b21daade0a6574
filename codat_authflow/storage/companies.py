"""The company repository: one key per company (`storage.codec` documents),
the per-state counts, and the company's event log.

It reads and queues writes; it does not decide anything. Changing a company
(running the state machine and committing every write that implies) is the
service `codat_authflow.company_updates`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from redis import Redis
from redis.client import Pipeline

from codat_authflow.storage.codec import (
    CompanyRecord,
    decode_record,
    encode_record,
    event_from_log,
)
from codat_authflow.storage.keys import Keys
from codat_authflow.storage.outbox import Outbox
from state_machine import ANY_DATA, CodatEvent, CompanyState, ReadinessGate


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class CompanyStore:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        history_limit: int = 25,
        event_log_limit: int = 50,
        gate: ReadinessGate = ANY_DATA,
    ):
        self.redis = redis
        self.keys = keys
        self.gate = gate
        self.history_limit = history_limit
        self.event_log_limit = event_log_limit
        self.outbox = Outbox(redis, keys)

    def get(self, company_id: str) -> CompanyRecord | None:
        raw = self.redis.get(self.keys.company(company_id))
        return decode_record(raw) if raw is not None else None

    def events(self, company_id: str) -> list[tuple[CodatEvent, str]]:
        """The company's logged events, oldest first, with when each was
        applied; at most `event_log_limit` (the newest)."""
        record = self.get(company_id)
        return [event_from_log(e, company_id) for e in record.events] if record else []

    def state_counts(self) -> dict[str, int]:
        counts = self.redis.hgetall(self.keys.state_counts)
        return {k.decode(): int(v) for k, v in counts.items()}

    def decode(self, raw: bytes | None, company_id: str, stamp: str) -> CompanyRecord:
        """A stored document, or a new record for a company seen first now."""
        return decode_record(raw) if raw is not None else CompanyRecord.new(company_id, stamp)

    def put(self, pipe: Pipeline, record: CompanyRecord) -> None:
        pipe.set(self.keys.company(record.facts.company_id), encode_record(record))

    def count_state(
        self, pipe: Pipeline, *, before: CompanyState | None, after: CompanyState
    ) -> None:
        """Keep the per-state counts: a new company (`before` None) or a move."""
        if before == after:
            return
        if before is not None:
            pipe.hincrby(self.keys.state_counts, before.value, -1)
        pipe.hincrby(self.keys.state_counts, after.value, 1)
