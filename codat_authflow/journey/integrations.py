"""The platforms a customer can connect, with Codat's branding.

Branding (get-integrations-branding) is cached in Redis for
`BRANDING_CACHE_SECONDS` (24 h by default), as Codat's guide asks: the
platform-selection page must not call Codat on every view. Integration
details (get-integration), which the accounting rule needs for a platform's
`sourceType`, are cached the same way. Errors are never cached.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from codat_authflow.journey.codat import CodatClient, integrations_query
from codat_authflow.journey.service import Journey


def _cached(
    journey: Journey, key: str, operation: str, fetch: Callable[[CodatClient], dict[str, Any]]
) -> tuple[dict[str, Any], bool]:
    raw = journey.redis.get(key)
    if raw is not None:
        try:
            return json.loads(raw), True
        except ValueError:
            pass  # a corrupt entry is refetched and overwritten
    value = fetch(journey.require_codat(operation))
    journey.redis.set(
        key, json.dumps(value, separators=(",", ":")), ex=journey.settings.branding_cache_seconds
    )
    return value, False


def list_integrations(
    journey: Journey, source_type: str | None, enabled: bool | None
) -> list[dict[str, Any]]:
    codat = journey.require_codat("list-integrations")
    return codat.list_integrations(integrations_query(source_type, enabled))


def branding(journey: Journey, platform_key: str) -> tuple[dict[str, Any], bool]:
    """Branding for a platform, and whether it came from the cache."""
    return _cached(
        journey,
        journey.keys.branding_cache(platform_key),
        "get-integrations-branding",
        lambda codat: codat.get_branding(platform_key),
    )


def integration(journey: Journey, platform_key: str) -> dict[str, Any]:
    value, _ = _cached(
        journey,
        journey.keys.integration_cache(platform_key),
        "get-integration",
        lambda codat: codat.get_integration(platform_key),
    )
    return value
