"""Codat's side of our webhook endpoint: the webhook consumer.

`setup_consumer` makes sure Codat has one consumer (create-webhook-consumer)
for our `/webhooks/codat` URL, subscribed to exactly the event types this
service acts on (`SUBSCRIBED_EVENT_TYPES`: the state machine's, and the rate
limit's). It lists the existing consumers first (list-webhook-consumers), so
running it again changes nothing. A consumer for the same URL with other
event types, or disabled, is reported, and replaced (delete-webhook-consumer,
then create) only when asked.

Codat's API does not return a consumer's signing secret: it is copied from
Codat's portal into `CODAT_WEBHOOK_SECRETS` (`NEXT_STEPS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import structlog

from codat_authflow.journey.codat import CodatClient
from codat_authflow.journey.rate_limit import RATE_LIMIT_EVENTS
from state_machine.events import HANDLED_EVENT_TYPES

log = structlog.get_logger(__name__)

#: What our consumer subscribes to: every event the state machine applies, and
#: the rate-limit events that pause reconciliation. Nothing else is sent.
SUBSCRIBED_EVENT_TYPES: tuple[str, ...] = tuple(sorted(HANDLED_EVENT_TYPES | RATE_LIMIT_EVENTS))

#: Codat's documented source addresses of webhook messages
#: (codat-docs: using-the-api/webhooks/create-consumer, "IP allowlist").
CODAT_WEBHOOK_SOURCE_IPS = ("4.159.114.108", "20.117.190.191")

NEXT_STEPS = (
    "Codat's API does not return the consumer's signing secret. Copy it from Codat's portal "
    "(Monitor > Webhooks > Events > this endpoint > Signing secret) into CODAT_WEBHOOK_SECRETS "
    "(while rotating, keep the previous secret too: comma-separated) and restart the web "
    "processes; until then every delivery is refused with 401 and Codat retries it."
)


class InvalidConsumerUrl(ValueError):
    """The URL cannot be Codat's consumer URL; the message says why."""


def check_url(url: str) -> str:
    """The URL as given, if Codat can deliver to it: absolute https (http only
    for localhost tests), with a host."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise InvalidConsumerUrl(f"{url!r} is not an absolute https URL")
    if parts.scheme == "http" and parts.hostname not in ("localhost", "127.0.0.1"):
        raise InvalidConsumerUrl(f"{url!r}: Codat delivers webhooks over https")
    return url.strip()


def same_url(a: Any, b: str) -> bool:
    """Whether two consumer URLs name the same endpoint (scheme and host in any
    case, a trailing slash or not)."""
    if not isinstance(a, str):
        return False

    def norm(url: str) -> tuple[str, str, str, str]:
        p = urlsplit(url.strip())
        return (p.scheme.lower(), (p.netloc or "").lower(), p.path.rstrip("/") or "/", p.query)

    return norm(a) == norm(b)


def differences(consumer: dict[str, Any]) -> dict[str, Any]:
    """How a consumer differs from ours: missing and extra event types, disabled."""
    theirs = set(consumer.get("eventTypes") or [])
    ours = set(SUBSCRIBED_EVENT_TYPES)
    found: dict[str, Any] = {}
    if ours - theirs:
        found["missingEventTypes"] = sorted(ours - theirs)
    if theirs - ours:
        found["extraEventTypes"] = sorted(theirs - ours)
    if consumer.get("disabled"):
        found["disabled"] = True
    return found


@dataclass
class ConsumerSetup:
    url: str
    consumer: dict[str, Any] | None = None
    created: bool = False
    deleted: list[str] = field(default_factory=list)
    conflicting: list[dict[str, Any]] = field(default_factory=list)  # same URL, not ours

    @property
    def done(self) -> bool:
        return self.consumer is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "consumer": self.consumer,
            "created": self.created,
            "deleted": self.deleted,
            "conflicting": [{**c, "differences": differences(c)} for c in self.conflicting],
            "eventTypes": list(SUBSCRIBED_EVENT_TYPES),
        }


def setup_consumer(codat: CodatClient, url: str, *, replace: bool = False) -> ConsumerSetup:
    """Ensure one consumer for `url` with exactly `SUBSCRIBED_EVENT_TYPES`.

    Already there (enabled, same event types): nothing is created. A consumer
    for `url` that differs is left alone and reported (`conflicting`, `done`
    False) unless `replace`: then it is deleted and ours created."""
    url = check_url(url)
    result = ConsumerSetup(url)
    same = [c for c in codat.list_webhook_consumers() if same_url(c.get("url"), url)]
    ours = [c for c in same if not differences(c)]
    if ours:
        result.consumer = ours[0]
        log.info("codat.webhook_consumer.exists", consumer_id=ours[0].get("id"), url=url)
        return result
    if same and not replace:
        result.conflicting = same
        return result
    for consumer in same:
        codat.delete_webhook_consumer(str(consumer["id"]))
        result.deleted.append(str(consumer["id"]))
        log.info("codat.webhook_consumer.deleted", consumer_id=consumer["id"], url=url)
    result.consumer = codat.create_webhook_consumer(url, list(SUBSCRIBED_EVENT_TYPES))
    result.created = True
    log.info("codat.webhook_consumer.created", consumer_id=result.consumer.get("id"), url=url)
    return result


def list_consumers(codat: CodatClient) -> list[dict[str, Any]]:
    """Codat's consumers, each with how it differs from ours (`differences`)."""
    return [{**c, "differences": differences(c)} for c in codat.list_webhook_consumers()]


__all__ = [
    "CODAT_WEBHOOK_SOURCE_IPS",
    "NEXT_STEPS",
    "SUBSCRIBED_EVENT_TYPES",
    "ConsumerSetup",
    "InvalidConsumerUrl",
    "list_consumers",
    "setup_consumer",
]
