"""Connections: create one and send the user to its `linkUrl`, list, unlink,
delete, refresh, and check one against Codat.

Every operation feeds what Codat answered to the state machine at once, as a
synthetic event through `CompanyUpdates.apply` (the function the webhooks use),
so the company's state follows each step as it happens; the webhook Codat
sends afterwards merges into the same facts and changes nothing.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import structlog

from codat_authflow.journey.codat import CodatNotFound, add_query_params
from codat_authflow.journey.errors import (
    AccountingConnectionExists,
    CompanyDeleted,
    CompanyNotFound,
    ConnectionNotFound,
    JourneyError,
)
from codat_authflow.journey.events import (
    API,
    connection_deleted,
    connection_observed,
    is_news,
    observations,
    snapshot_of,
)
from codat_authflow.journey.integrations import integration
from codat_authflow.journey.service import Journey
from codat_authflow.storage.codec import CompanyRecord
from codat_authflow.storage.reconciliation import TRACKED_STATES
from state_machine import CompanyFacts, ConnectionFacts

log = structlog.get_logger(__name__)


class UnknownPlatform(JourneyError):
    status = 404
    code = "unknown_platform"


class IntegrationDisabled(JourneyError):
    status = 409
    code = "integration_disabled"


def known_company(journey: Journey, company_id: str, *, writable: bool = True) -> CompanyRecord:
    record = journey.store.get(company_id)
    if record is None:
        raise CompanyNotFound(company_id)
    if writable and record.facts.deleted_at is not None:
        raise CompanyDeleted(company_id)
    return record


def _epoch(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def link_expired(connection: dict[str, Any], now: float, lifetime: int) -> bool:
    """A PendingAuth connection whose Link URL can no longer be used (Link URLs
    expire one day after they are issued, used or not)."""
    created = _epoch(connection.get("created"))
    return (
        connection.get("status") == "PendingAuth"
        and created is not None
        and now - created >= lifetime
    )


def link_url_state(
    company_id: str,
    connection: dict[str, Any],
    outcome: dict[str, Any] | None,
    now: float,
    lifetime: int,
) -> dict[str, Any]:
    """Whether a connection's Link URL can still be handed to the user.

    Codat's Link URLs carry a one-time password: a URL can be used once, and
    expires one day after it was issued even if unused (Codat's *Build your
    own auth flow*). So a `PendingAuth` connection's URL is

    * `used` once the user came back from Link for it (our redirect page
      recorded an outcome: cancelled, error, or a success Codat has not
      confirmed yet) or Codat reports a linking error on it
      (`dataConnectionErrors`);
    * `expired` LINK_URL_LIFETIME_SECONDS after the connection's `created`;
    * `usable` otherwise.

    A used or expired URL is not handed out; the action is to create a new
    connection for the same platform (POST .../connections), which gets a
    fresh URL. Connections that are not `PendingAuth` have no Link URL to use
    (`state` None)."""
    if connection.get("status") != "PendingAuth":
        return {"state": None, "expiresAt": None, "action": None}
    created = _epoch(connection.get("created"))
    expires_at = created + lifetime if created is not None else None
    if outcome is not None or connection.get("dataConnectionErrors"):
        state = "used"
    elif expires_at is not None and now >= expires_at:
        state = "expired"
    else:
        state = "usable"
    action = None
    if state != "usable":
        platform_key = connection.get("integrationKey")
        why = (
            "was already used (Link URLs work once)"
            if state == "used"
            else "has expired (Link URLs last one day)"
        )
        action = {
            "type": "create_connection",
            "method": "POST",
            "path": f"/api/companies/{company_id}/connections",
            "body": {"platformKey": platform_key},
            "message": f"this connection's Link URL {why}; create a new connection for "
            f"{connection.get('platformName') or platform_key} and send the user its linkUrl",
        }
    return {
        "state": state,
        "expiresAt": _stamp(expires_at) if expires_at is not None else None,
        "action": action,
    }


def _stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def linked_accounting(facts: CompanyFacts) -> list[ConnectionFacts]:
    """The company's linked accounting connections. Codat lets a company *link*
    one accounting platform (any number of banking or commerce ones); pending
    connections do not count, so a user who cancelled or picked the wrong
    platform can start again, and unlinked, deauthorized or deleted ones no
    longer give access."""
    return [c for c in facts.connections if c.is_linked and c.source_type == "Accounting"]


def _confirm_with_codat(
    journey: Journey, company_id: str, record: CompanyRecord, suspects: list[ConnectionFacts]
) -> CompanyRecord:
    """Our facts say an accounting connection is linked; before refusing, ask
    Codat (list-connections, then get-connection for any it does not list) and
    record the answers, so a refusal never rests on a webhook we missed."""
    codat = journey.require_codat("list-connections")
    stamp = journey.stamp()
    live = codat.list_connections(company_id)
    events = observations(company_id, record.facts, live, source=API, generated_at=stamp)
    listed = {c["id"] for c in live}
    for suspect in suspects:
        if suspect.id in listed:
            continue
        try:
            connection = codat.get_connection(company_id, suspect.id)
        except CodatNotFound:
            events.append(
                connection_deleted(
                    company_id, suspect.id, known=suspect, source=API, generated_at=stamp
                )
            )
            continue
        if connection.get("id") == suspect.id and is_news(record.facts, snapshot_of(connection)):
            events.append(
                connection_observed(company_id, connection, source=API, generated_at=stamp)
            )
    return journey.apply(company_id, events) or record


def _platform(journey: Journey, platform_key: str) -> dict[str, Any]:
    try:
        return integration(journey, platform_key)
    except CodatNotFound as exc:
        raise UnknownPlatform(
            f"Codat knows no platform with key {platform_key!r}; "
            "see GET /api/integrations for the keys"
        ) from exc


def create_connection(
    journey: Journey,
    company_id: str,
    platform_key: str,
    link_params: dict[str, str] | None = None,
    *,
    source: str = API,
) -> dict[str, Any]:
    """`source`: who acted, as the company's history and event log show it
    (`api`: the host application; `customer`: the connect pages)."""
    codat = journey.require_codat("create-connection")
    record = known_company(journey, company_id)
    platform = _platform(journey, platform_key)
    if platform.get("enabled") is False:
        raise IntegrationDisabled(
            f"the platform {platform_key!r} is not enabled for your customers; "
            "enable it in Codat's portal first"
        )

    if platform.get("sourceType") == "Accounting" and linked_accounting(record.facts):
        record = _confirm_with_codat(journey, company_id, record, linked_accounting(record.facts))
        blocking = linked_accounting(record.facts)
        if blocking:
            raise AccountingConnectionExists(
                "a company can link only one accounting platform, and this one is linked to "
                + ", ".join(f"{c.platform_name or c.platform_key} ({c.id})" for c in blocking)
                + "; unlink or delete that connection first "
                "(POST .../connections/{connectionId}/unlink or DELETE .../connections/"
                "{connectionId})",
                details={
                    "connections": [
                        {
                            "connectionId": c.id,
                            "platformKey": c.platform_key,
                            "platformName": c.platform_name,
                            "status": c.status,
                        }
                        for c in blocking
                    ]
                },
            )

    # Never hand out an existing connection's URL (it may be used or expired):
    # every call creates a fresh connection, hence a fresh Link URL.
    connection = codat.create_connection(company_id, platform_key)
    event = connection_observed(
        company_id,
        connection,
        source=source,
        generated_at=journey.stamp(),
        event_type="connection.created",
    )
    record = journey.apply(company_id, [event])
    assert record is not None
    # A new Link URL gives the company a fresh reconciliation window (and
    # brings back one that was set aside because its earlier links expired).
    journey.redis.hdel(journey.keys.reconcile_stuck, company_id)
    if record.state in TRACKED_STATES:
        journey.index.put(company_id, record.state, journey.now())
    log.info(
        "connection.created",
        company_id=company_id,
        connection_id=connection["id"],
        platform_key=platform_key,
        state=record.state.value,
    )
    link_url = connection.get("linkUrl")
    return {
        "connectionId": connection["id"],
        "linkUrl": add_query_params(link_url, link_params or {}) if link_url else None,
        "status": connection.get("status"),
        "platformKey": connection.get("integrationKey") or platform_key,
        "platformName": connection.get("platformName"),
        "sourceType": connection.get("sourceType"),
        "companyId": company_id,
        "companyState": record.state.value,
    }


def _facts_view(record: CompanyRecord, connection_id: str) -> dict[str, Any] | None:
    known = record.facts.connection(connection_id)
    if known is None:
        return None
    error = known.last_error
    return {
        "status": "Deleted" if known.deleted_at else known.status,
        "deletedAt": known.deleted_at,
        "lastError": None
        if error is None
        else {
            "statusCode": error.status_code,
            "statusText": error.status_text,
            "errorMessage": error.error_message,
            "at": error.at,
        },
    }


def list_connections(journey: Journey, company_id: str) -> dict[str, Any]:
    """Codat's live list, merged with what the state machine knows."""
    codat = journey.require_codat("list-connections")
    record = known_company(journey, company_id, writable=False)
    live = codat.list_connections(company_id)
    record = journey.apply(
        company_id,
        observations(company_id, record.facts, live, source=API, generated_at=journey.stamp()),
    )
    assert record is not None
    outcomes = link_outcomes(journey, company_id)
    now, lifetime = journey.now(), journey.settings.link_url_lifetime_seconds
    listed = []
    for c in live:
        link = link_url_state(company_id, c, outcomes.get(c["id"]), now, lifetime)
        listed.append(
            {
                "connectionId": c["id"],
                "platformKey": c.get("integrationKey"),
                "platformName": c.get("platformName"),
                "sourceType": c.get("sourceType"),
                "status": c.get("status"),
                "created": c.get("created"),
                "lastSync": c.get("lastSync"),
                "linkUrl": c.get("linkUrl") if link["state"] == "usable" else None,
                "linkUrlState": link["state"],
                "linkUrlExpiresAt": link["expiresAt"],
                "action": link["action"],
                "dataConnectionErrors": c.get("dataConnectionErrors") or [],
                "tracked": _facts_view(record, c["id"]),
                "lastLinkOutcome": outcomes.get(c["id"]),
            }
        )
    live_ids = {c["id"] for c in live}
    for known in record.facts.connections:
        if known.id in live_ids:
            continue
        listed.append(
            {
                "connectionId": known.id,
                "platformKey": known.platform_key,
                "platformName": known.platform_name,
                "sourceType": known.source_type,
                "status": None,  # not listed by Codat
                "created": known.created,
                "lastSync": None,
                "linkUrl": None,
                "linkUrlState": None,
                "linkUrlExpiresAt": None,
                "action": None,
                "dataConnectionErrors": [],
                "tracked": _facts_view(record, known.id),
                "lastLinkOutcome": outcomes.get(known.id),
            }
        )
    return {"companyId": company_id, "state": record.state.value, "connections": listed}


def _not_found(company_id: str, connection_id: str, exc: CodatNotFound) -> ConnectionNotFound:
    return ConnectionNotFound(
        f"Codat has no connection {connection_id!r} for company {company_id!r}",
        details=exc.details(),
    )


def unlink_connection(
    journey: Journey, company_id: str, connection_id: str, *, source: str = API
) -> dict[str, Any]:
    """Revoke our access to the platform; the data already synced stays."""
    codat = journey.require_codat("unlink-connection")
    known_company(journey, company_id)
    try:
        connection = codat.unlink_connection(company_id, connection_id)
    except CodatNotFound as exc:
        raise _not_found(company_id, connection_id, exc) from exc
    event = connection_observed(company_id, connection, source=source, generated_at=journey.stamp())
    record = journey.apply(company_id, [event])
    assert record is not None
    return {
        "connectionId": connection["id"],
        "status": connection.get("status"),
        "companyId": company_id,
        "companyState": record.state.value,
    }


def delete_connection(
    journey: Journey, company_id: str, connection_id: str, *, source: str = API
) -> dict[str, Any]:
    """Delete the connection and the data Codat holds through it."""
    codat = journey.require_codat("delete-connection")
    record = known_company(journey, company_id)
    try:
        codat.delete_connection(company_id, connection_id)
    except CodatNotFound as exc:
        raise _not_found(company_id, connection_id, exc) from exc
    event = connection_deleted(
        company_id,
        connection_id,
        known=record.facts.connection(connection_id),
        source=source,
        generated_at=journey.stamp(),
    )
    record = journey.apply(company_id, [event])
    assert record is not None
    return {
        "connectionId": connection_id,
        "status": "Deleted",
        "companyId": company_id,
        "companyState": record.state.value,
    }


def connection_management_token(journey: Journey, company_id: str) -> dict[str, Any]:
    """Codat's get-connection-management-access-token for the company's
    connection manager (Codat's embeddable UI). Nothing is stored."""
    codat = journey.require_codat("get-connection-management-access-token")
    known_company(journey, company_id)
    token = codat.get_connection_management_token(company_id)  # 404 at Codat: 404
    return {"companyId": company_id, "accessToken": token.get("accessToken")}


def refresh(journey: Journey, company_id: str) -> dict[str, Any]:
    """Queue a fetch of every data type (refresh-company-data).

    Nothing is applied to the state machine: a refresh only asks for data,
    it proves no read; the `read.completed` webhook that follows is real news
    (and reconciliation finds the read if that webhook never comes)."""
    codat = journey.require_codat("refresh-company-data")
    record = known_company(journey, company_id)
    codat.refresh_company_data(company_id)
    return {"companyId": company_id, "status": "queued", "companyState": record.state.value}


def check_connection(
    journey: Journey, company_id: str, connection_id: str, *, source: str
) -> tuple[CompanyRecord, dict[str, Any] | None]:
    """Ask Codat what one connection is now and record it. The connection is
    None when Codat has none by that id (recorded as deleted if we knew it)."""
    codat = journey.require_codat("get-connection")
    record = known_company(journey, company_id, writable=False)
    try:
        connection = codat.get_connection(company_id, connection_id)
    except CodatNotFound:
        known = record.facts.connection(connection_id)
        if known is not None and known.deleted_at is None:
            event = connection_deleted(
                company_id, connection_id, known=known, source=source, generated_at=journey.stamp()
            )
            record = journey.apply(company_id, [event]) or record
        return record, None
    if is_news(record.facts, snapshot_of(connection)):
        event = connection_observed(
            company_id, connection, source=source, generated_at=journey.stamp()
        )
        record = journey.apply(company_id, [event]) or record
    return record, connection


def link_outcomes(journey: Journey, company_id: str) -> dict[str, dict[str, Any]]:
    raw = journey.redis.hgetall(journey.keys.link_outcomes(company_id))
    outcomes = {}
    for field, value in raw.items():
        try:
            outcomes[field.decode()] = json.loads(value)
        except ValueError:
            continue
    return outcomes
