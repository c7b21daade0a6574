"""RQ job of the delivery workers: one attempt at one delivery.

The logic is in `codat_authflow.delivery` (relay: outbox to deliveries;
attempts: an attempt, its retries, replays); this is the entrypoint RQ runs.
"""

from __future__ import annotations

from functools import cache

import httpx

from codat_authflow.delivery.attempts import attempt_delivery
from codat_authflow.delivery.sender import make_client
from workers.context import current


@cache
def _client() -> httpx.Client:
    return make_client()


def deliver(delivery_id_: str) -> str:
    """RQ job: one attempt at one delivery. Returns the delivery's status."""
    return attempt_delivery(current(), delivery_id_, client=_client())
