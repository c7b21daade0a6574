"""Re-queue the failed initial reads that keep a company from `ready`.

A linked connection whose initial reads only failed (for the data types the
readiness gate needs, or for every data type with no gate) leaves its company
in `syncing`; Codat does not retry an initial read by itself before the next
scheduled sync. Reconciliation asks Codat to fetch each such data type again
(refresh-data-type, for that connection), a bounded number of times
(`RECONCILE_REFRESH_MAX_TRIES`) with a doubling delay between tries
(`RECONCILE_REFRESH_BACKOFF_SECONDS`).

Not re-queued: `NotSupported` (the platform does not offer the data type, so
a retry cannot help) and reads that failed with `AuthError` (the
credentials were refused: the user has to reconnect).

Tries are kept per company in one hash (`storage.keys.Keys.refresh_tries`), field
`{connectionId}/{dataType}`, value `{"tries": n, "nextAt": epoch}`, and it
expires a week after its last change, so a company that became ready or was
deleted leaves nothing behind for long.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from state_machine import CompanyFacts, ReadinessGate
from state_machine.readiness import initial_sync_failures

NOT_RETRIED = frozenset({"NotSupported", "AuthError"})
TRIES_TTL_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class Refresh:
    connection_id: str
    data_type: str
    status: str | None
    tries: int  # including this one

    def to_json(self) -> dict[str, Any]:
        return {
            "connectionId": self.connection_id,
            "dataType": self.data_type,
            "status": self.status,
            "try": self.tries,
        }


def failed_reads(facts: CompanyFacts, gate: ReadinessGate) -> list[tuple[str, str, str | None]]:
    """(connection, data type, status) of the failed initial reads worth a retry."""
    return [
        (c.id, d.data_type, d.status)
        for c in facts.connections
        if c.is_linked
        for d in initial_sync_failures(c, gate)
        if d.status not in NOT_RETRIED
    ]


def refresh_failed_reads(journey, company_id: str, facts: CompanyFacts) -> list[Refresh]:
    """Re-queue what is due; returns what was re-queued. Raises `CodatError`
    (a 429 included) from the first call that fails, keeping the tries made."""
    settings = journey.settings
    if settings.refresh_max_tries <= 0:
        return []
    key = journey.keys.refresh_tries(company_id)
    gate = journey.store.gate
    now = journey.now()
    done: list[Refresh] = []
    for connection_id, data_type, status in failed_reads(facts, gate):
        field = f"{connection_id}/{data_type}"
        raw = journey.redis.hget(key, field)
        tried = json.loads(raw) if raw else {"tries": 0, "nextAt": 0}
        if tried["tries"] >= settings.refresh_max_tries or tried["nextAt"] > now:
            continue
        codat = journey.require_codat("refresh-data-type")
        codat.refresh_data_type(company_id, data_type, connection_id)
        tries = tried["tries"] + 1
        delay = settings.refresh_backoff_seconds * 2 ** (tries - 1)
        with journey.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, field, json.dumps({"tries": tries, "nextAt": now + delay}))
            pipe.expire(key, TRIES_TTL_SECONDS)
            pipe.execute()
        done.append(Refresh(connection_id, data_type, status, tries))
    return done
