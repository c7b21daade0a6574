"""Creating the Codat company for one of the host application's customers,
exactly once.

The host identifies its customer in one of two ways:

* `customerId` (`create_customer_company`): any string. It is stored at Codat
  as the company tag `customerId` (Codat's way to keep a foreign id, and to
  find a company by it: list-companies `tags=customerId=<value>`), so it is
  free of Codat's company-name rules; the name is for display.
  `{p}:companies:by-customer:{customerId}` maps it to the Codat company id.
* `name` alone (`create_company`, the original call): the name is the
  customer id and the idempotency key, looked up at Codat by name.
  `{p}:companies:by-name:{name}` maps it to the Codat company id.

Either way, a request that finds no mapping claims the key atomically
(`SET NX` of a `pending:<token>` marker with a TTL) and only the claimant
talks to Codat; a concurrent request for the same customer waits a moment for
the mapping and returns the same company, or answers 409 with `Retry-After`
if the claimant is still at work.

The claimant first asks Codat for companies already bearing that exact
customer id tag (or name) and adopts the oldest one if any; only otherwise
does it create one. A customer whose company has since been deleted in Codat
gets a new company. That makes a retry after an ambiguous failure safe: if
create-company timed out after Codat had in fact created the company, the
next attempt finds it instead of creating a second. The mapping is resolved
(compare-and-set on our token) only after the company is in our store, so a
mapping never points at a company this service does not know.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
import uuid
from collections.abc import Callable
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

#: The company tag that carries the host's customer id (Codat's tag keys: 1-27 characters).
CUSTOMER_TAG = "customerId"
#: Customer ids made only of these are their own tag value (see `customer_tag_value`).
PLAIN_TAG_VALUE = re.compile(r"[A-Za-z0-9_\-.:/@+#]{1,100}")
ENCODED_PREFIXES = ("b64.", "sha256.")
MAX_BASE64_BYTES = 72  # "b64." + 96 characters: Codat's 100-character limit on tag values
#: Characters Codat's company name pattern (`^[A-Za-z0-9\s\-',&@.,?!\s]+$`) refuses.
CODAT_NAME_REFUSED = re.compile(r"[^A-Za-z0-9\s\-',&@.?!]")
MAX_NAME_CHARS = 100

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
    """The company for the host's id `name` (the name is the idempotency key;
    Codat's list-companies is asked by name before creating)."""
    codat = journey.require_codat("create-company")
    return _create_once(
        journey,
        journey.keys.company_by_name(name),
        name,
        label=f"named {name!r}",
        find=lambda: codat.find_companies_named(name),
        create=lambda: codat.create_company(name, description, tags),
    )


def create_customer_company(
    journey: Journey,
    customer_id: str,
    name: str | None,
    description: str | None,
    tags: dict[str, str] | None,
) -> CompanyCreation:
    """The company for the host's `customer_id`, whatever characters it holds.

    The customer id is the idempotency key: our marker
    `{p}:companies:by-customer:{customerId}` first, then Codat's
    list-companies filtered on the company tag `customerId` (its `tags`
    parameter), and only then create-company, with that tag. The company's
    name is `name`, or one derived from the customer id (`display_name`)."""
    codat = journey.require_codat("create-company")
    value = customer_tag_value(customer_id)
    all_tags = {**(tags or {}), CUSTOMER_TAG: value}
    display = name or display_name(customer_id)
    return _create_once(
        journey,
        journey.keys.company_by_customer(customer_id),
        display,
        label=f"for customer id {customer_id!r}",
        find=lambda: codat.find_companies_tagged(CUSTOMER_TAG, value),
        create=lambda: codat.create_company(display, description, all_tags),
    )


def customer_tag_value(customer_id: str) -> str:
    """The value of the company tag `customerId` for `customer_id`.

    Codat's tag values are strings of at most 100 characters, and list-companies
    filters them with its query language (`tags=customerId=<value>`), whose
    operators (`&&`, `||`, `=`, `!=`, `~`, `<`, `>`, braces) must not appear in
    the value. A customer id of the characters in `PLAIN_TAG_VALUE` is the value
    itself (readable in Codat's portal); any other is `b64.` and the unpadded
    URL-safe Base64 of its UTF-8 bytes, or, beyond 72 bytes, `sha256.` and
    their hex digest. Each form is distinct from the others."""
    if PLAIN_TAG_VALUE.fullmatch(customer_id) and not customer_id.startswith(ENCODED_PREFIXES):
        return customer_id
    raw = customer_id.encode()
    if len(raw) <= MAX_BASE64_BYTES:
        return "b64." + base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return "sha256." + hashlib.sha256(raw).hexdigest()


def display_name(customer_id: str) -> str:
    """A company name Codat accepts, for a customer id used as the name: the
    characters Codat's pattern refuses become `-`."""
    name = CODAT_NAME_REFUSED.sub("-", customer_id).strip()[:MAX_NAME_CHARS].strip()
    return name if name.strip("-") else "Customer"


def _create_once(
    journey: Journey,
    key: str,
    name: str,
    *,
    label: str,
    find: Callable[[], list[dict]],
    create: Callable[[], dict],
) -> CompanyCreation:
    """Find or create the Codat company behind the marker `key`, exactly once
    (see the module's docstring)."""
    redis = journey.redis
    swap = redis.register_script(_SWAP)
    deadline = time.monotonic() + WAIT_FOR_OTHER_SECONDS
    token = f"{PENDING}{uuid.uuid4()}"
    while True:
        current = redis.get(key)
        if current is not None and not current.decode().startswith(PENDING):
            erased = redis.hexists(journey.keys.tombstones, current.decode())
            record = None if erased else _known(journey, current.decode(), name)
            if record is not None and record.facts.deleted_at is None:
                return CompanyCreation(record, created=False)
            # Deleted in Codat (or erased here) since: this customer needs a new company.
            if swap(keys=[key], args=[current, token, _claim_ttl(journey)]):
                break
            continue
        if current is None and redis.set(key, token, nx=True, ex=_claim_ttl(journey)):
            break
        if time.monotonic() >= deadline:
            raise CreationInProgress(
                f"another request is creating the company {label}; retry shortly",
                retry_after=1,
            )
        time.sleep(POLL_SECONDS)

    try:
        existing = sorted(find(), key=lambda c: (c.get("created") or "", c["id"]))
        if existing:
            company, created = existing[0], False
            log.info("company.adopted", company_id=company["id"], matches=len(existing))
        else:
            company, created = create(), True
            log.info("company.created_at_codat", company_id=company["id"])
        company_id = _company_id(company)
        event = company_created(company, source=API, fallback_at=journey.stamp())
        record = journey.apply(company_id, [event])
        swap(keys=[key], args=[token, company_id, 0])
        redis.set(journey.keys.company_marker(company_id), key)  # for erasure
    except BaseException:
        swap(keys=[key], args=[token, "", 0])
        raise
    assert record is not None
    return CompanyCreation(record, created=created)
