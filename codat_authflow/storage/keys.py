"""Redis key names, in one place."""

from __future__ import annotations

from dataclasses import dataclass

INBOX_GROUP = "workers"
OUTBOX_GROUP = "relay"


@dataclass(frozen=True)
class Keys:
    prefix: str = "authflow"

    def seen(self, webhook_id: str) -> str:
        return f"{self.prefix}:seen:{webhook_id}"

    @property
    def inbox(self) -> str:
        return f"{self.prefix}:inbox"

    @property
    def drain_scheduled(self) -> str:
        return f"{self.prefix}:inbox:drain-scheduled"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}:inbox:dead"

    @property
    def outbox(self) -> str:
        return f"{self.prefix}:outbox"

    @property
    def outbox_dead_letters(self) -> str:
        return f"{self.prefix}:outbox:dead"

    @property
    def ignored_events(self) -> str:
        return f"{self.prefix}:events:ignored"

    def company(self, company_id: str) -> str:
        return f"{self.prefix}:company:{company_id}"

    @property
    def state_counts(self) -> str:
        return f"{self.prefix}:stats:states"

    @property
    def ignored_counts(self) -> str:
        return f"{self.prefix}:stats:ignored"
