"""Per-process wiring for jobs: settings, Redis, inbox and store, built once."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from redis import Redis

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
class WorkerContext:
    settings: Settings
    redis: Redis
    inbox: Inbox
    store: CompanyStore
    subscriptions: SubscriptionStore
    deliveries: DeliveryStore

    @classmethod
    def build(cls, settings: Settings, redis: Redis | None = None) -> WorkerContext:
        redis = redis if redis is not None else connect(settings.redis_url)
        keys = Keys(settings.key_prefix)
        return cls(
            settings=settings,
            redis=redis,
            inbox=Inbox(
                redis,
                keys,
                dedupe_ttl_seconds=settings.dedupe_ttl_seconds,
                outcome_counter=webhook_outcome_counter(settings.key_prefix),
            ),
            store=CompanyStore(
                redis,
                keys,
                history_limit=settings.history_limit,
                event_log_limit=settings.event_log_limit,
                gate=ReadinessGate.of(settings.ready_data_types),
            ),
            subscriptions=SubscriptionStore(redis, keys),
            deliveries=DeliveryStore(redis, keys),
        )


@cache
def current() -> WorkerContext:
    return WorkerContext.build(Settings.from_env())
