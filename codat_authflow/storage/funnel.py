"""What the funnel and the metrics need from each company commit, and how the
funnel finds and loads a period's companies.

Data model:

| key | type | what |
| --- | --- | --- |
| `{p}:funnel:first-seen` | sorted set | company id -> epoch s it was first seen |
| `{p}:company:{id}` | string | the record: state, connections (`sourceType`), history |
| `{p}:company:{id}:events` | list | bounded event log: `connection.failed` reasons |
| `{p}:link:outcomes:{id}` | hash | redirect after Link, per connection |

`index_first_seen` is called from `company_updates.commit_change`, inside
the MULTI that writes the company, so the index entry commits with the
change it describes, whoever made it (webhook drain, API,
reconciliation). A funnel over a period reads the index's range (one
ZRANGEBYSCORE), then the records of those companies alone, in pipelined
chunks: the cost grows with the companies in the period, never with all
companies. Companies stored before the index existed are added by
`flask --app app funnel rebuild-index` (one SCAN).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence

from redis import Redis
from redis.client import Pipeline

from codat_authflow.funnel.compute import CompanyJourney
from codat_authflow.storage.codec import decode_record
from codat_authflow.storage.keys import Keys
from codat_authflow.storage.reconciliation import stamp_epoch

CHUNK = 500
SUCCESSFUL_REDIRECTS = frozenset({"connected", "pending"})


def first_seen_key(keys: Keys) -> str:
    return keys.funnel_first_seen


def link_outcomes_key(keys: Keys, company_id: str) -> str:
    return keys.link_outcomes(company_id)


def index_first_seen(pipe: Pipeline, keys: Keys, company_id: str, stamp: str) -> None:
    """Queue on `pipe` the first-seen index entry of a company seen first now."""
    pipe.zadd(first_seen_key(keys), {company_id: stamp_epoch(stamp)}, nx=True)


def cohort(redis: Redis, keys: Keys, since: float, until: float) -> list[str]:
    """Ids of the companies first seen in [since, until) (epoch seconds)."""
    raw = redis.zrangebyscore(first_seen_key(keys), since, f"({until}")
    return [member.decode() for member in raw]


def _failure_reason(errors: list | None) -> str:
    if errors:
        status_code, status_text, error_message, _ = (list(errors[-1]) + [None] * 4)[:4]
        for value in (error_message, status_text, status_code):
            if value:
                return str(value)[:200]
    return "no reason given"


def connection_failures(logged_events: Iterable[dict]) -> tuple[str, ...]:
    """A reason per distinct `connection.failed` event of the event log."""
    seen, reasons = set(), []
    for data in logged_events:
        if data.get("type") != "connection.failed" or data.get("id") in seen:
            continue
        seen.add(data.get("id"))
        reasons.append(_failure_reason((data.get("connection") or {}).get("errors")))
    return tuple(reasons)


def redirect_failures(raw_outcomes: dict[bytes, bytes]) -> tuple[tuple[str, str], ...]:
    """(outcome, reason) per connection whose redirect after Link was not a success."""
    failures = []
    for raw in raw_outcomes.values():
        try:
            data = json.loads(raw)
        except ValueError:
            continue
        outcome = data.get("outcome") or "unknown"
        if outcome in SUCCESSFUL_REDIRECTS:
            continue
        reported = data.get("reported") or {}
        reason = reported.get("errorMessage") or reported.get("statusText")
        if not reason and reported.get("statusCode") is not None:
            reason = f"statusCode {reported['statusCode']}"
        failures.append((outcome, str(reason or "no reason given")[:200]))
    return tuple(sorted(failures))


def load_journeys(
    redis: Redis, keys: Keys, company_ids: Sequence[str], *, chunk: int = CHUNK
) -> Iterator[CompanyJourney]:
    """The funnel's view of each company, read in pipelined chunks."""
    for start in range(0, len(company_ids), chunk):
        ids = company_ids[start : start + chunk]
        with redis.pipeline(transaction=False) as pipe:
            for company_id in ids:
                pipe.get(keys.company(company_id))
                pipe.hgetall(link_outcomes_key(keys, company_id))
            replies = pipe.execute()
        for index, company_id in enumerate(ids):
            raw, outcomes = replies[2 * index : 2 * index + 2]
            if raw is None:
                continue  # indexed, then deleted by hand
            record = decode_record(raw)
            yield CompanyJourney(
                company_id=company_id,
                first_seen_at=record.first_seen_at,
                state=record.state.value,
                history=record.history,
                created_at=record.facts.created_at,
                first_ready_at=record.first_ready_at,
                source_types=frozenset(
                    c.source_type for c in record.facts.connections if c.source_type
                ),
                connection_failures=connection_failures(record.events),
                redirect_failures=redirect_failures(outcomes),
            )


def company_ids(redis: Redis, keys: Keys) -> Iterator[str]:
    """Every stored company id (one SCAN; for one-off maintenance commands)."""
    head = keys.company("")
    for key in redis.scan_iter(match=keys.company("*"), count=1000):
        rest = key.decode()[len(head) :]
        if rest and ":" not in rest:
            yield rest


def rebuild_index(redis: Redis, keys: Keys) -> int:
    """Index the companies missing from the first-seen index; returns how
    many were added (existing entries are kept)."""
    added = 0
    ids = list(company_ids(redis, keys))
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        raws = redis.mget([keys.company(i) for i in chunk])
        entries = {
            company_id: stamp_epoch(decode_record(raw).first_seen_at)
            for company_id, raw in zip(chunk, raws, strict=True)
            if raw is not None
        }
        if entries:
            added += redis.zadd(first_seen_key(keys), entries, nx=True)
    return added
