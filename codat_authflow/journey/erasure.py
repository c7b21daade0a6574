"""Erasing a company: at Codat, then here, leaving a tombstone.

`erase_company` (DELETE /api/companies/<id>, `flask --app app companies
erase`):

1. delete-company at Codat (the company, its connections and Codat's cached
   data). A 404 means Codat has no such company any more: erasure goes on.
   Any other failure stops here and nothing is changed, so the call can be
   retried.
2. The company is marked deleted through the state machine (a synthetic
   `company.deleted`), which sends `company.revoked` with
   `companyDeleted: true` to subscribers through the outbox. If that moved
   the company nowhere (it was `revoked` already), an explicit
   `company.revoked` (`companyDeleted: true`, `erased: true`) is sent
   instead, in the erasure's own transaction. Either way the notification is
   committed before the data goes.
3. One transaction removes the company document (and with it the company's
   event log and history), its per-state count, reconciliation index entries,
   stuck report, refresh tries, funnel entry, redirect outcomes, and the
   creation marker that pointed at it (by name or customer id), and writes
   the tombstone `{p}:tombstones[id] = {"erasedAt", ...}`.

The tombstone is what keeps it erased: `CompanyUpdates.apply` drops every
later event for the company (a webhook Codat retries for a day, a
reconciliation already under way), the drain acknowledges them, and the
company is never recreated. Erasing again answers the tombstone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import structlog
from redis.exceptions import WatchError

from codat_authflow.journey.codat import CodatNotFound
from codat_authflow.journey.errors import CompanyNotFound
from codat_authflow.journey.events import API, company_deleted
from codat_authflow.journey.service import Journey
from codat_authflow.storage.reconciliation import TRACKED_STATES, index_key
from state_machine import CompanyState
from state_machine.notifications import Notification, notification_id

log = structlog.get_logger(__name__)

MAX_ATTEMPTS = 10


@dataclass(frozen=True)
class Erasure:
    company_id: str
    erased_at: str
    deleted_at_codat: bool  # False: Codat had no such company any more (or not asked)
    already_erased: bool = False
    notified: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "companyId": self.company_id,
            "status": "erased",
            "erasedAt": self.erased_at,
            "deletedAtCodat": self.deleted_at_codat,
            "alreadyErased": self.already_erased,
            "notified": list(self.notified),
        }


def tombstone(journey: Journey, company_id: str) -> dict[str, Any] | None:
    raw = journey.redis.hget(journey.keys.tombstones, company_id)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        value = {}
    return value if isinstance(value, dict) else {}


def erase_company(journey: Journey, company_id: str, *, ask_codat: bool = True) -> Erasure:
    """Erase `company_id` (see the module's docstring). `ask_codat=False`
    skips delete-company (the CLI's `--local-only`, for a company Codat has
    already deleted)."""
    gone = tombstone(journey, company_id)
    if gone is not None:
        return Erasure(
            company_id,
            erased_at=str(gone.get("erasedAt") or ""),
            deleted_at_codat=bool(gone.get("deletedAtCodat")),
            already_erased=True,
        )
    if journey.store.get(company_id) is None:
        raise CompanyNotFound(company_id)

    deleted_at_codat = False
    if ask_codat:
        codat = journey.require_codat("delete-company")
        try:
            codat.delete_company(company_id)
            deleted_at_codat = True
        except CodatNotFound:
            log.info("erasure.not_at_codat", company_id=company_id)

    stamp = journey.stamp()
    event = company_deleted(company_id, source=API, generated_at=stamp)
    applied = journey.updates.apply({company_id: [event]}, now=journey.stamp)
    if company_id in applied.failed:
        raise applied.failed[company_id]
    notified = [n.type for n in applied.notifications.get(company_id, [])]
    extra = None
    if "company.revoked" not in notified:
        extra = _revoked_notice(company_id, event.id, stamp)
        notified.append(extra.type)

    erasure = Erasure(
        company_id, erased_at=stamp, deleted_at_codat=deleted_at_codat, notified=tuple(notified)
    )
    _erase_here(journey, company_id, erasure, extra)
    log.warning(
        "company.erased",
        company_id=company_id,
        deleted_at_codat=deleted_at_codat,
        notified=notified,
    )
    return erasure


def _revoked_notice(company_id: str, cause_id: str, stamp: str) -> Notification:
    """`company.revoked` for a company erased while already `revoked`."""
    return Notification(
        id=notification_id("company.revoked", company_id, "erased"),
        type="company.revoked",
        company_id=company_id,
        data={
            "companyId": company_id,
            "from": CompanyState.REVOKED.value,
            "to": CompanyState.REVOKED.value,
            "cause": {
                "eventId": cause_id,
                "eventType": "company.deleted",
                "eventGeneratedAt": stamp,
                "synthetic": True,
            },
            "companyDeleted": True,
            "erased": True,
        },
    )


def _erase_here(
    journey: Journey, company_id: str, erasure: Erasure, extra: Notification | None
) -> None:
    """Every local trace of the company, and the tombstone, in one transaction."""
    redis, keys, store = journey.redis, journey.keys, journey.store
    document = keys.company(company_id)
    marker_ref = keys.company_marker(company_id)
    tomb = json.dumps(
        {"erasedAt": erasure.erased_at, "deletedAtCodat": erasure.deleted_at_codat},
        separators=(",", ":"),
    )
    for _attempt in range(MAX_ATTEMPTS):
        with redis.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(document, marker_ref)
                record = store.get(company_id)
                marker = pipe.get(marker_ref)
                points_here = marker is not None and pipe.get(marker) == company_id.encode()
                pipe.multi()
                if extra is not None:
                    store.outbox.append(pipe, extra, erasure.erased_at)
                pipe.hset(keys.tombstones, company_id, tomb)
                pipe.delete(document, marker_ref, keys.refresh_tries(company_id))
                pipe.delete(keys.link_outcomes(company_id), keys.reconcile_lock(company_id))
                if points_here:
                    pipe.delete(marker)
                if record is not None:
                    pipe.hincrby(keys.state_counts, record.state.value, -1)
                for state in TRACKED_STATES:
                    pipe.zrem(index_key(keys, state), company_id)
                pipe.hdel(keys.reconcile_stuck, company_id)
                pipe.zrem(keys.funnel_first_seen, company_id)
                pipe.execute()
                return
            except WatchError:
                continue
    raise RuntimeError(f"could not erase {company_id}: the company kept changing")


__all__ = ["Erasure", "erase_company", "tombstone"]
