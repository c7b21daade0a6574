"""`Journey`: what every journey operation needs (settings, Redis, the
company store, the Codat client), built once per process by the web app, the
RQ worker and the CLI alike."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from redis import Redis

from codat_authflow.company_updates import CompanyUpdates
from codat_authflow.journey import rate_limit
from codat_authflow.journey.codat import CodatClient, CodatRateLimited, build_http_client
from codat_authflow.journey.codat.errors import not_configured
from codat_authflow.journey.events import now_stamp
from codat_authflow.settings import Settings
from codat_authflow.storage.codec import CompanyRecord
from codat_authflow.storage.companies import CompanyStore
from codat_authflow.storage.keys import Keys
from codat_authflow.storage.reconciliation import ReconciliationIndex


def build_codat_client(
    settings: Settings, http_client: httpx.Client | None = None
) -> CodatClient | None:
    """The Codat client for `settings`, or None without `CODAT_API_KEY`."""
    if not settings.codat_api_key:
        return None
    return CodatClient(
        api_key=settings.codat_api_key,
        base_url=settings.codat_base_url,
        http_client=http_client
        or build_http_client(
            connect_timeout=settings.codat_connect_timeout_seconds,
            timeout=settings.codat_timeout_seconds,
        ),
    )


@dataclass
class Journey:
    settings: Settings
    redis: Redis
    store: CompanyStore
    codat: CodatClient | None
    keys: Keys
    index: ReconciliationIndex
    clock: Callable[[], float] = field(default=time.time)

    @classmethod
    def build(
        cls,
        settings: Settings,
        redis: Redis,
        store: CompanyStore,
        *,
        codat: CodatClient | None = None,
        http_client: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
    ) -> Journey:
        return cls(
            settings=settings,
            redis=redis,
            store=store,
            codat=codat if codat is not None else build_codat_client(settings, http_client),
            keys=Keys(settings.key_prefix),
            index=ReconciliationIndex(redis, store.keys),
            clock=clock,
        )

    def require_codat(self, operation: str) -> CodatClient:
        if self.codat is None:
            raise not_configured(operation)
        return self.codat

    def now(self) -> float:
        return self.clock()

    def back_off(self, exc: CodatRateLimited) -> None:
        """Codat answered 429: reconciliation waits its Retry-After too, whoever
        made the call (journey/rate_limit.py). Never raises."""
        rate_limit.back_off(
            self.redis, self.keys, exc.retry_after_seconds, operation=exc.operation, now=self.now()
        )

    def stamp(self) -> str:
        """Now, as a canonical UTC timestamp (what synthetic events carry)."""
        return now_stamp(self.clock())

    @property
    def updates(self) -> CompanyUpdates:
        return CompanyUpdates(self.store)

    def apply(self, company_id: str, events: list) -> CompanyRecord | None:
        """Apply events to one company through the service the webhooks use
        (`codat_authflow.company_updates`); its record afterwards."""
        return self.updates.apply_one(company_id, events, now=self.stamp)
