"""The notification outbox: notifications are appended here in the same
transaction that commits the company change causing them (see
codat_authflow/storage/companies.py), then relayed to subscribers' deliveries by
codat_authflow/delivery/relay.py. A worker killed between the two steps can therefore
neither lose a notification nor send one for an uncommitted change."""

from __future__ import annotations

import json

from redis import Redis
from redis.client import Pipeline

from codat_authflow.storage.keys import OUTBOX_GROUP, Keys
from codat_authflow.storage.streams import StreamEntry, StreamQueue
from state_machine.notifications import Notification


def envelope(notification: Notification, timestamp: str) -> dict:
    """What subscribers receive: `{id, type, timestamp, data}`."""
    return {
        "id": notification.id,
        "type": notification.type,
        "timestamp": timestamp,
        "data": notification.data,
    }


class Outbox(StreamQueue):
    def __init__(self, redis: Redis, keys: Keys):
        super().__init__(redis, keys.outbox, OUTBOX_GROUP, keys.outbox_dead_letters)

    def append(self, pipe: Pipeline, notification: Notification, timestamp: str) -> None:
        pipe.xadd(
            self.stream,
            {
                "id": notification.id,
                "type": notification.type,
                "company_id": notification.company_id,
                "envelope": json.dumps(envelope(notification, timestamp), separators=(",", ":")),
            },
        )

    @staticmethod
    def envelope_of(entry: StreamEntry) -> dict:
        return json.loads(entry.fields[b"envelope"])
