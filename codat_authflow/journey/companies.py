"""Creating the Codat company for one of the host application's customers,
exactly once.

The host sends its own id for the customer as the company `name` (Codat's
advice), so the name is the idempotency key. `{p}:companies:by-name:{name}`
maps it to the Codat company id. A request that finds no mapping claims the
name atomically (`SET NX` of a `pending:<token>` marker with a TTL) and only
the claimant talks to Codat; a concurrent request with the same name waits a
moment for the mapping and returns the same company, or answers 409 with
`Retry-After` if the claimant is still at work.

The claimant first asks Codat for companies already bearing that exact name
(list-companies) and adopts the oldest one if any; only otherwise does it
create one. A name whose company has since been deleted in Codat gets a new
company. That makes a retry after an ambiguous failure safe: if
create-company timed out after Codat had in fact created the company, the
next attempt finds it instead of creating a second. The mapping is resolved
(compare-and-set on our token) only after the company is in our store, so a
mapping never points at a company this service does not know.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import structlog

from codat_authflow.journey.codat import CodatInvalidResponse
from codat_authflow.journey.errors import CreationInProgress
from codat_authflow.journey.events import API, company_created
from codat_authflow.journey.service import Journey
from codat_authflow.storage.codec import CompanyRecord

log = structlog.get_logger(__name__)

PENDING = "pending:"
WAIT_FOR_OTHER_SECONDS = 5.0
POLL_SECONDS = 0.1

# Compare-and-set. KEYS: name key. ARGV: the value expected, the value to set
# ("" deletes the key), a TTL in seconds ("0": none).
_SWAP = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  if ARGV[2] == '' then
    redis.call('DEL', KEYS[1])
  elseif ARGV[3] == '0' then
    redis.call('SET', KEYS[1], ARGV[2])
  else
    redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  end
  return 1
end
return 0
"""


@dataclass(frozen=True)
class CompanyCreation:
    record: CompanyRecord
    created: bool  # False: the company existed (here, or at Codat under this name)


def _claim_ttl(journey: Journey) -> int:
    """Long enough for a lookup and a create at their full timeouts."""
    settings = journey.settings
    return 2 * (settings.codat_connect_timeout_seconds + settings.codat_timeout_seconds) + 10


def _known(journey: Journey, company_id: str, name: str) -> CompanyRecord:
    """The stored company a mapping points at (re-recorded if somehow missing)."""
    record = journey.store.get(company_id)
    if record is None:
        event = company_created(
            {"id": company_id, "name": name}, source=API, fallback_at=journey.stamp()
        )
        record = journey.apply(company_id, [event])
    assert record is not None
    return record


def _company_id(company: dict) -> str:
    value = str(company.get("id"))
    try:
        uuid.UUID(value)
        return value
    except ValueError as exc:
        raise CodatInvalidResponse(
            "Codat answered create-company without a valid company id",
            operation="create-company",
        ) from exc


def create_company(
    journey: Journey, name: str, description: str | None, tags: dict[str, str] | None
) -> CompanyCreation:
    codat = journey.require_codat("create-company")
    redis = journey.redis
    swap = redis.register_script(_SWAP)
    key = journey.keys.company_by_name(name)
    deadline = time.monotonic() + WAIT_FOR_OTHER_SECONDS
    token = f"{PENDING}{uuid.uuid4()}"
    while True:
        current = redis.get(key)
        if current is not None and not current.decode().startswith(PENDING):
            record = _known(journey, current.decode(), name)
            if record.facts.deleted_at is None:
                return CompanyCreation(record, created=False)
            # Deleted in Codat since: this customer needs a new company.
            if swap(keys=[key], args=[current, token, _claim_ttl(journey)]):
                break
            continue
        if current is None and redis.set(key, token, nx=True, ex=_claim_ttl(journey)):
            break
        if time.monotonic() >= deadline:
            raise CreationInProgress(
                f"another request is creating the company named {name!r}; retry shortly",
                retry_after=1,
            )
        time.sleep(POLL_SECONDS)

    try:
        existing = sorted(
            codat.find_companies_named(name), key=lambda c: (c.get("created") or "", c["id"])
        )
        if existing:
            company, created = existing[0], False
            log.info("company.adopted", company_id=company["id"], matches=len(existing))
        else:
            company, created = codat.create_company(name, description, tags), True
            log.info("company.created_at_codat", company_id=company["id"])
        company_id = _company_id(company)
        event = company_created(company, source=API, fallback_at=journey.stamp())
        record = journey.apply(company_id, [event])
        swap(keys=[key], args=[token, company_id, 0])
    except BaseException:
        swap(keys=[key], args=[token, "", 0])
        raise
    assert record is not None
    return CompanyCreation(record, created=created)
