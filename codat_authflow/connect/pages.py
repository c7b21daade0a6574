"""What the connect pages show, and what the customer does on them.

Reads: the platforms to choose from (list-integrations per configured source
type, enabled only, and each platform's branding: both cached in Redis for
`BRANDING_CACHE_SECONDS`, as Codat's guide asks), the company's status, its
connections. Actions (choose a platform, reconnect, revoke access, delete)
go through the journey's own use cases, so the one-accounting-connection
rule and the state machine apply exactly as for the API; each is recorded in
the company's event log (and, when it moves the state, its history) as a
synthetic event with source `customer`, and in `{p}:connect:actions:{companyId}`
with actor `customer` (what the customer did, successful or not).

Scope: an action on a connection is refused unless that connection is one
of the link's company's (in its facts, which list-connections refreshes),
before anything is asked of Codat.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import structlog

from codat_authflow.journey import connections as journey_connections
from codat_authflow.journey import integrations as journey_integrations
from codat_authflow.journey.codat import CodatError
from codat_authflow.journey.connections import known_company
from codat_authflow.journey.events import CUSTOMER
from codat_authflow.journey.service import Journey
from state_machine import ConnectionFacts

log = structlog.get_logger(__name__)

ACTOR = "customer"
MAX_ACTIONS = 50
#: A platform list larger than this is cut (Codat lists a few dozen per type).
MAX_PLATFORMS = 200


class NotYourConnection(Exception):
    """The connection id in a form is not one of the link's company's."""


class CannotReconnect(Exception):
    """Only a deauthorized connection with a Link URL can be reconnected."""


class NoLinkUrl(Exception):
    """Codat created the connection but gave no Link URL to send the customer to."""


@dataclass(frozen=True)
class Platform:
    key: str
    name: str
    source_type: str
    logo_src: str | None = None
    logo_alt: str | None = None
    button_src: str | None = None
    button_hover_src: str | None = None


def _image(branding: dict[str, Any], group: str, variant: str) -> dict[str, Any]:
    value = (branding.get(group) or {}).get(variant) or {}
    image = value.get("image") if isinstance(value, dict) else None
    return image if isinstance(image, dict) else {}


def _https(url: Any) -> str | None:
    """Only absolute https URLs are put in a page (never javascript: or data:)."""
    return url if isinstance(url, str) and url.startswith("https://") else None


def _enabled_integrations(journey: Journey, source_type: str) -> list[dict[str, Any]]:
    key = journey.keys.connect_integrations(source_type)
    raw = journey.redis.get(key)
    if raw is not None:
        try:
            return json.loads(raw)
        except ValueError:
            pass
    found = journey_integrations.list_integrations(journey, source_type.lower(), True)
    kept = [
        {"key": i.get("key"), "name": i.get("name"), "sourceType": i.get("sourceType")}
        for i in found[:MAX_PLATFORMS]
        if isinstance(i.get("key"), str) and i.get("enabled") is not False
    ]
    journey.redis.set(
        key, json.dumps(kept, separators=(",", ":")), ex=journey.settings.branding_cache_seconds
    )
    return kept


def _platform(journey: Journey, integration: dict[str, Any], source_type: str) -> Platform:
    key = integration["key"]
    name = integration.get("name") or key
    try:
        branding, _ = journey_integrations.branding(journey, key)
    except CodatError as exc:  # no logo then: the page shows the name
        log.warning("connect.branding_unavailable", platform_key=key, error_code=exc.code)
        branding = {}
    logo = _image(branding, "logo", "square") or _image(branding, "logo", "full")
    return Platform(
        key=key,
        name=name,
        source_type=source_type,
        logo_src=_https(logo.get("src")),
        logo_alt=logo.get("alt") if isinstance(logo.get("alt"), str) else None,
        button_src=_https(_image(branding, "button", "default").get("src")),
        button_hover_src=_https(_image(branding, "button", "hover").get("src")),
    )


def platform_sections(journey: Journey) -> list[dict[str, Any]]:
    """One section per CONNECT_SOURCE_TYPES entry (the first required, the
    others optional), each with its enabled platforms, sorted by name."""
    sections = []
    for position, source_type in enumerate(journey.settings.connect_source_types):
        platforms = [
            _platform(journey, integration, source_type)
            for integration in _enabled_integrations(journey, source_type)
        ]
        platforms.sort(key=lambda p: p.name.lower())
        sections.append(
            {"sourceType": source_type, "optional": position > 0, "platforms": platforms}
        )
    return sections


# -- status --------------------------------------------------------------------


def status(journey: Journey, company_id: str) -> dict[str, Any]:
    """What the result page polls: the company's state, and whether it is ready."""
    record = known_company(journey, company_id, writable=False)
    linked = [c for c in record.facts.connections if c.is_linked]
    return {
        "state": record.state.value,
        "ready": record.state.value == "ready",
        "connections": [
            {"platformName": c.platform_name, "sourceType": c.source_type} for c in linked
        ],
    }


# -- connections -----------------------------------------------------------------


def _data_types(known: ConnectionFacts | None) -> list[dict[str, Any]]:
    if known is None:
        return []
    return [
        {
            "dataType": d.data_type,
            "status": d.status,
            "lastReadAt": d.last_read_at,
            "complete": d.complete,
        }
        for d in known.data_types
    ]


def connections(journey: Journey, company_id: str) -> dict[str, Any]:
    """The company's connections (live from Codat, merged with our facts), each
    with its data types and their latest read status."""
    listed = journey_connections.list_connections(journey, company_id)
    record = known_company(journey, company_id, writable=False)
    rows = []
    for c in listed["connections"]:
        known = record.facts.connection(c["connectionId"])
        tracked = c.get("tracked") or {}
        status = c.get("status") or tracked.get("status")
        if status == "Deleted" or (known is not None and known.deleted_at):
            continue  # gone for good: nothing to manage
        rows.append(
            {
                "connectionId": c["connectionId"],
                "platformName": c.get("platformName") or c.get("platformKey"),
                "platformKey": c.get("platformKey"),
                "sourceType": c.get("sourceType"),
                "status": status,
                "lastSync": c.get("lastSync"),
                "dataTypes": _data_types(known),
            }
        )
    return {"state": listed["state"], "connections": rows}


def _own_connection(journey: Journey, company_id: str, connection_id: str) -> ConnectionFacts:
    record = known_company(journey, company_id, writable=False)
    known = record.facts.connection(connection_id)
    if known is None or known.deleted_at is not None:
        raise NotYourConnection(connection_id)
    return known


def connection_name(journey: Journey, company_id: str, connection_id: str) -> str:
    known = _own_connection(journey, company_id, connection_id)
    return known.platform_name or known.platform_key or connection_id


# -- actions ----------------------------------------------------------------------


def record_action(journey: Journey, company_id: str, action: str, **details: Any) -> None:
    entry = {"at": journey.stamp(), "actor": ACTOR, "action": action}
    entry.update({k: v for k, v in details.items() if v is not None})
    key = journey.keys.connect_actions(company_id)
    pipe = journey.redis.pipeline(transaction=True)
    pipe.lpush(key, json.dumps(entry, separators=(",", ":")))
    pipe.ltrim(key, 0, MAX_ACTIONS - 1)
    pipe.execute()
    log.info("connect.action", company_id=company_id, actor=ACTOR, action=action, **details)


def actions(journey: Journey, company_id: str, limit: int = MAX_ACTIONS) -> list[dict[str, Any]]:
    out = []
    for raw in journey.redis.lrange(journey.keys.connect_actions(company_id), 0, limit - 1):
        try:
            out.append(json.loads(raw))
        except ValueError:
            continue
    return out


def choose_platform(journey: Journey, company_id: str, link_id: str, platform_key: str) -> str:
    """Create the connection (journey rules apply); the Link URL to send the customer to."""
    action = {"linkId": link_id, "platformKey": platform_key}
    try:
        created = journey_connections.create_connection(
            journey, company_id, platform_key, source=CUSTOMER
        )
    except Exception as exc:
        result = getattr(exc, "code", "error")
        record_action(journey, company_id, "connection.create", **action, result=result)
        raise
    action["connectionId"] = created["connectionId"]
    record_action(journey, company_id, "connection.create", **action, result="ok")
    if not created.get("linkUrl"):
        raise NoLinkUrl(created["connectionId"])
    return created["linkUrl"]


def reconnect(journey: Journey, company_id: str, link_id: str, connection_id: str) -> str:
    """A fresh Link URL for a deauthorized (or still pending) connection of the company."""
    _own_connection(journey, company_id, connection_id)
    _, connection = journey_connections.check_connection(
        journey, company_id, connection_id, source=CUSTOMER
    )
    if connection is None or connection.get("status") not in ("Deauthorized", "PendingAuth"):
        raise CannotReconnect(connection_id)
    link_url = connection.get("linkUrl")
    if not isinstance(link_url, str) or not link_url.startswith("https://"):
        raise CannotReconnect(connection_id)
    record_action(
        journey, company_id, "connection.reconnect", linkId=link_id, connectionId=connection_id
    )
    return link_url


def unlink(journey: Journey, company_id: str, link_id: str, connection_id: str) -> dict[str, Any]:
    return _act(journey, company_id, link_id, connection_id, "unlink")


def delete(journey: Journey, company_id: str, link_id: str, connection_id: str) -> dict[str, Any]:
    return _act(journey, company_id, link_id, connection_id, "delete")


_ACTIONS = {
    "unlink": journey_connections.unlink_connection,
    "delete": journey_connections.delete_connection,
}


def _act(
    journey: Journey, company_id: str, link_id: str, connection_id: str, action: str
) -> dict[str, Any]:
    """One of the company's own connections, through the journey, as the customer."""
    _own_connection(journey, company_id, connection_id)
    result = _ACTIONS[action](journey, company_id, connection_id, source=CUSTOMER)
    record_action(
        journey, company_id, f"connection.{action}", linkId=link_id, connectionId=connection_id
    )
    return result
