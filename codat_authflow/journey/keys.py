"""Redis key names of the authorization journey, in one place (same prefix as
`codat_authflow.storage.keys.Keys`).

| key | type | what |
| --- | --- | --- |
| `{p}:companies:by-name:{name}` | string | host name -> company id (`pending:<token>` meanwhile) |
| `{p}:cache:integration:{platformKey}` | string (JSON), TTL | get-integration (accounting rule) |
| `{p}:cache:branding:{platformKey}` | string (JSON), TTL 24 h | get-integrations-branding |
| `{p}:reconcile:{state}` | sorted set | see `codat_authflow.storage.reconciliation` |
| `{p}:reconcile:lock:{companyId}` | string, TTL | one reconciliation of a company at a time |
| `{p}:reconcile:stuck` | hash | companyId -> JSON report of a company reconciliation cannot move |
| `{p}:reconcile:refresh:{companyId}` | hash, TTL 7 d | `{conn}/{type}` -> tries of a refresh |
| `{p}:link:outcomes:{companyId}` | hash, TTL 30 d | connectionId -> the redirect's outcome |
| `{p}:link:checked:{connectionId}` | string, TTL | throttles the Codat check a redirect triggers |
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class JourneyKeys:
    prefix: str = "authflow"

    def company_by_name(self, name: str) -> str:
        return f"{self.prefix}:companies:by-name:{name}"

    def integration_cache(self, platform_key: str) -> str:
        return f"{self.prefix}:cache:integration:{platform_key}"

    def branding_cache(self, platform_key: str) -> str:
        return f"{self.prefix}:cache:branding:{platform_key}"

    def reconcile_lock(self, company_id: str) -> str:
        return f"{self.prefix}:reconcile:lock:{company_id}"

    def refresh_tries(self, company_id: str) -> str:
        return f"{self.prefix}:reconcile:refresh:{company_id}"

    @property
    def stuck(self) -> str:
        return f"{self.prefix}:reconcile:stuck"

    def link_outcomes(self, company_id: str) -> str:
        return f"{self.prefix}:link:outcomes:{company_id}"

    def link_checked(self, connection_id: str) -> str:
        return f"{self.prefix}:link:checked:{connection_id}"
