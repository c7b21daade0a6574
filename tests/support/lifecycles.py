"""Realistic Codat webhook sequences, built from the examples in Codat's own
OpenAPI document (`tests/data/Codat-Platform.json`, a copy of
`shared/codat/Codat-Platform.json`) with fresh ids and timestamps.

Used by the tests, the benchmarks and the demo, so all three send exactly what
Codat documents, not bodies we invented.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

SPEC_PATH = Path(__file__).resolve().parents[1] / "data" / "Codat-Platform.json"


@cache
def _spec() -> dict[str, Any]:
    return json.loads(SPEC_PATH.read_text())


def spec_example(event_type: str, example: str | None = None) -> dict[str, Any]:
    """A deep copy of the spec's example body for `event_type`."""
    examples = _spec()["webhooks"][event_type]["post"]["requestBody"]["content"][
        "application/json"
    ]["examples"]
    chosen = examples[example] if example else next(iter(examples.values()))
    return copy.deepcopy(chosen["value"])


def codat_timestamp(moment: datetime) -> str:
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


@dataclass
class Connection:
    id: str
    source_type: str = "Accounting"
    platform_key: str = "gbol"
    platform_name: str = "Xero"


@dataclass
class Lifecycle:
    """Builds one company's events; each new event is generated `step` later."""

    company_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    company_name: str = "Toft stores"
    start: datetime = field(default_factory=lambda: datetime(2026, 1, 5, 9, 0, tzinfo=UTC))
    step: timedelta = timedelta(seconds=7)
    events: list[dict[str, Any]] = field(default_factory=list)

    def _stamp(self, body: dict[str, Any]) -> dict[str, Any]:
        body["id"] = str(uuid.uuid4())
        body["generatedDate"] = codat_timestamp(self.start + self.step * len(self.events))
        self.events.append(body)
        return body

    def _reference(self, reference: dict[str, Any]) -> None:
        reference["id"] = self.company_id
        reference["name"] = self.company_name
        reference.get("links", {})["portal"] = (
            f"https://app.codat.io/companies/{self.company_id}/summary"
        )

    def company(self, event_type: str) -> dict[str, Any]:
        body = spec_example(event_type)
        body["payload"].update(id=self.company_id, name=self.company_name)
        body["payload"]["redirect"] = f"https://link.codat.io/company/{self.company_id}"
        return self._stamp(body)

    def connection(
        self,
        event_type: str,
        connection: Connection,
        *,
        example: str | None = None,
        status: str | None = None,
    ) -> dict[str, Any]:
        body = spec_example(event_type, example)
        self._reference(body["payload"]["referenceCompany"])
        payload_connection = body["payload"]["connection"]
        payload_connection.update(
            id=connection.id,
            sourceType=connection.source_type,
            integrationKey=connection.platform_key,
            platformName=connection.platform_name,
            linkUrl=(
                f"https://link-api.codat.io/companies/{self.company_id}"
                f"/connections/{connection.id}/start"
            ),
        )
        if status is not None:
            payload_connection["status"] = status
        return self._stamp(body)

    def read(
        self,
        event_type: str,
        *connections: Connection,
        data_types: tuple[str, ...] = ("invoices", "bankAccounts"),
        status: str = "Complete",
        modified: bool = False,
    ) -> dict[str, Any]:
        """A read event with one `dataTypes[]` element per connection and data type."""
        body = spec_example(
            event_type,
            "Initial without issues"
            if event_type.endswith("initial")
            else "Read completed without issues",
        )
        self._reference(body["payload"]["referenceCompany"])
        template = body["payload"]["dataTypes"][0]
        issues = (
            []
            if status == "Complete"
            else [{"type": "error.fetch", "message": f"Codat could not read it: {status}"}]
        )
        body["payload"]["dataTypes"] = [
            {
                **template,
                "connectionId": c.id,
                "dataType": data_type,
                "status": status,
                "recordsModified": modified,
                "issues": issues,
            }
            for c in connections
            for data_type in data_types
        ]
        return self._stamp(body)


def new_connection(source_type: str = "Accounting") -> Connection:
    platform = {
        "Accounting": ("gbol", "Xero"),
        "Banking": ("dfxm", "Basiq"),
        "Commerce": ("hmbc", "Shopify"),
    }[source_type]
    return Connection(str(uuid.uuid4()), source_type, *platform)


def _happy(life: Lifecycle, connection: Connection | None = None) -> Connection:
    connection = connection or new_connection()
    life.company("company.created")
    life.connection("connection.created", connection)
    life.connection("connection.connected", connection)
    life.read("read.completed", connection)
    life.read("read.completed.initial", connection)
    return connection


def happy_path(life: Lifecycle) -> str:
    _happy(life)
    return "ready"


def failed_then_linked(life: Lifecycle) -> str:
    first, second = new_connection(), new_connection()
    life.company("company.created")
    life.connection("connection.created", first)
    life.connection("connection.failed", first)
    life.connection("connection.created", second)
    life.connection("connection.connected", second)
    life.read("read.completed", second)
    life.read("read.completed.initial", second)
    return "ready"


def failed_only(life: Lifecycle) -> str:
    connection = new_connection()
    life.company("company.created")
    life.connection("connection.created", connection)
    life.connection("connection.failed", connection)
    return "linking"


def several_banking(life: Lifecycle) -> str:
    accounting, bank_a, bank_b = (
        new_connection(),
        new_connection("Banking"),
        new_connection("Banking"),
    )
    life.company("company.created")
    for connection in (accounting, bank_a, bank_b):
        life.connection("connection.created", connection)
        life.connection("connection.connected", connection)
    life.read("read.completed", accounting, bank_a, bank_b)
    life.read("read.completed.initial", accounting, bank_a, bank_b)
    life.connection("connection.disconnected", bank_a, example="Unlinked")
    return "ready"


def revoked_after_ready(life: Lifecycle) -> str:
    connection = _happy(life)
    life.connection("connection.disconnected", connection, example="De-authorized")
    return "revoked"


def reconnected(life: Lifecycle) -> str:
    connection = _happy(life)
    life.connection("connection.disconnected", connection, example="Unlinked")
    life.connection("connection.reconnected", connection)
    return "ready"


def connection_deleted(life: Lifecycle) -> str:
    connection = _happy(life)
    life.connection("connection.deleted", connection)
    return "revoked"


def company_deleted(life: Lifecycle) -> str:
    _happy(life)
    life.company("company.deleted")
    return "revoked"


def linked_waiting_for_sync(life: Lifecycle) -> str:
    connection = new_connection("Commerce")
    life.company("company.created")
    life.connection("connection.created", connection)
    life.connection("connection.connected", connection)
    return "linked"


def syncing(life: Lifecycle) -> str:
    connection = new_connection()
    life.company("company.created")
    life.connection("connection.created", connection)
    life.connection("connection.connected", connection)
    life.read("read.completed", connection)
    return "syncing"


def failed_read_after_deauthorization(life: Lifecycle) -> str:
    """Codat's next scheduled read fails with AuthError: it proves nothing."""
    connection = _happy(life)
    life.connection("connection.disconnected", connection, example="De-authorized")
    life.read("read.completed", connection, status="AuthError")
    return "revoked"


def initial_reads_all_failed(life: Lifecycle) -> str:
    connection = new_connection()
    life.company("company.created")
    life.connection("connection.created", connection)
    life.connection("connection.connected", connection)
    life.read("read.completed.initial", connection, data_types=("invoices",), status="FetchError")
    life.read("read.completed.initial", connection, data_types=("bills",), status="AuthError")
    return "syncing"


def initial_reads_one_type_at_a_time(life: Lifecycle) -> str:
    """One initial read per data type, the first one failed."""
    connection = new_connection()
    life.company("company.created")
    life.connection("connection.created", connection)
    life.connection("connection.connected", connection)
    life.read("read.completed.initial", connection, data_types=("bills",), status="FetchError")
    life.read("read.completed.initial", connection, data_types=("invoices",))
    life.read("read.completed.initial", connection, data_types=("balanceSheet",))
    return "ready"


def new_platform_after_delete(life: Lifecycle) -> str:
    """The accounting connection is deleted, another platform is linked: it
    waits for its own sync."""
    first = _happy(life)
    life.connection("connection.deleted", first)
    second = new_connection()
    life.connection("connection.created", second)
    life.connection("connection.connected", second)
    return "linked"


def new_platform_synced_after_delete(life: Lifecycle) -> str:
    first = _happy(life)
    life.connection("connection.deleted", first)
    second = Connection(str(uuid.uuid4()), "Accounting", "qhyg", "QuickBooks Online")
    life.connection("connection.created", second)
    life.connection("connection.connected", second)
    life.read("read.completed.initial", second)
    return "ready"


def accounting_and_banking_in_one_read(life: Lifecycle) -> str:
    accounting, bank = new_connection(), new_connection("Banking")
    life.company("company.created")
    for connection in (accounting, bank):
        life.connection("connection.created", connection)
        life.connection("connection.connected", connection)
    life.read("read.completed.initial", accounting, bank, data_types=("bankTransactions",))
    life.connection("connection.disconnected", accounting, example="De-authorized")
    return "ready"


def unknown_statuses(life: Lifecycle) -> str:
    """Values Codat may add without notice: stored, never taken as linked."""
    connection = _happy(life)
    life.read("read.completed", connection, data_types=("bills",), status="SomethingNew")
    life.connection("connection.disconnected", connection, status="Suspended")
    return "revoked"


def data_changed_while_ready(life: Lifecycle) -> str:
    connection = _happy(life)
    life.read("read.completed", connection, data_types=("invoices",), modified=True)
    return "ready"


LIFECYCLES: dict[str, Callable[[Lifecycle], str]] = {
    "happy_path": happy_path,
    "failed_then_linked": failed_then_linked,
    "failed_only": failed_only,
    "several_banking": several_banking,
    "revoked_after_ready": revoked_after_ready,
    "reconnected": reconnected,
    "connection_deleted": connection_deleted,
    "company_deleted": company_deleted,
    "linked_waiting_for_sync": linked_waiting_for_sync,
    "syncing": syncing,
    "failed_read_after_deauthorization": failed_read_after_deauthorization,
    "initial_reads_all_failed": initial_reads_all_failed,
    "initial_reads_one_type_at_a_time": initial_reads_one_type_at_a_time,
    "new_platform_after_delete": new_platform_after_delete,
    "new_platform_synced_after_delete": new_platform_synced_after_delete,
    "accounting_and_banking_in_one_read": accounting_and_banking_in_one_read,
    "unknown_statuses": unknown_statuses,
    "data_changed_while_ready": data_changed_while_ready,
}


def build(kind: str, **kwargs: Any) -> tuple[Lifecycle, str]:
    """Events of one company for lifecycle `kind`, and the state it must end in."""
    life = Lifecycle(**kwargs)
    expected = LIFECYCLES[kind](life)
    return life, expected
