"""The one place the service's parts are built: `Services.build(settings)`.

The web tier (`app.create_app`), the RQ jobs (`workers.context.current`) and
the CLI all call it, so a request handler, a job and a command reach Redis,
the company store and the delivery stores through the same objects, built
the same way. The authorization journey (Codat's Platform API) is built on
top of it by `build_journey`.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from redis import Redis

from codat_authflow.company_updates import CompanyUpdates
from codat_authflow.journey.service import Journey
from codat_authflow.observability.metrics import webhook_outcome_counter
from codat_authflow.redis_client import connect
from codat_authflow.settings import Settings
from codat_authflow.storage.companies import CompanyStore
from codat_authflow.storage.deliveries import DeliveryStore
from codat_authflow.storage.inbox import Inbox
from codat_authflow.storage.keys import Keys
from codat_authflow.storage.subscriptions import SubscriptionStore
from state_machine import ReadinessGate


@dataclass(frozen=True)
class Services:
    settings: Settings
    redis: Redis
    inbox: Inbox
    store: CompanyStore
    updates: CompanyUpdates
    subscriptions: SubscriptionStore
    deliveries: DeliveryStore

    @classmethod
    def build(cls, settings: Settings, redis: Redis | None = None) -> Services:
        """Tests may pass `redis` (a fakeredis, or a private server)."""
        redis = redis if redis is not None else connect(settings)
        keys = Keys(settings.key_prefix)
        store = CompanyStore(
            redis,
            keys,
            history_limit=settings.history_limit,
            event_log_limit=settings.event_log_limit,
            gate=ReadinessGate.of(settings.ready_data_types),
        )
        return cls(
            settings=settings,
            redis=redis,
            inbox=Inbox(
                redis,
                keys,
                dedupe_ttl_seconds=settings.dedupe_ttl_seconds,
                outcome_counter=webhook_outcome_counter(settings.key_prefix),
            ),
            store=store,
            updates=CompanyUpdates(store),
            subscriptions=SubscriptionStore(redis, keys),
            deliveries=DeliveryStore(redis, keys),
        )


def build_journey(services: Services, *, http_client: httpx.Client | None = None) -> Journey:
    """The journey's use cases over `services`; `http_client` lets tests choose
    how Codat is reached."""
    return Journey.build(services.settings, services.redis, services.store, http_client=http_client)
