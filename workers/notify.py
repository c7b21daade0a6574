"""RQ jobs of the delivery workers: the pump, and one attempt at one delivery.

The logic is in `codat_authflow.delivery` (relay: outbox to the delivery
schedule; pump: due deliveries to subscribers; attempts: retries, replays);
these are the entrypoints RQ runs.
"""

from __future__ import annotations

from functools import cache

import httpx

from codat_authflow.delivery.attempts import attempt_delivery
from codat_authflow.delivery.pump import run_pump
from codat_authflow.delivery.sender import make_client
from workers.context import current


@cache
def _client() -> httpx.Client:
    return make_client()


def pump() -> dict[str, int]:
    """RQ job: send due deliveries until none has come for DELIVERY_PUMP_IDLE_MS
    (or DELIVERY_PUMP_MAX_SECONDS have passed: then a fresh pump takes over)."""
    return run_pump(current(), _client())


def deliver(delivery_id_: str) -> str:
    """RQ job of releases before the pump: one attempt at one delivery."""
    return attempt_delivery(current(), delivery_id_, client=_client())
