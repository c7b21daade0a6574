"""Codat webhook events as small immutable values.

`parse_codat_event` turns the JSON body Codat sends (see `webhooks` in Codat's
OpenAPI document: `CompanyWebhook`, `ConnectionWebhook`,
`ReadCompletedWebhook`) into a `CodatEvent`. Field names are Codat's, looked up
in the spec, never guessed. Event types we do not act on parse too (with
`handled=False`) so that they can be recorded and ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

COMPANY_EVENTS = frozenset({"company.created", "company.deleted"})
CONNECTION_EVENTS = frozenset(
    {
        "connection.created",
        "connection.connected",
        "connection.failed",
        "connection.disconnected",
        "connection.reconnected",
        "connection.deleted",
    }
)
READ_EVENTS = frozenset({"read.completed", "read.completed.initial"})
HANDLED_EVENT_TYPES = COMPANY_EVENTS | CONNECTION_EVENTS | READ_EVENTS

# Codat's `dataConnectionStatus` enum. Codat adds values without notice, so a
# status outside it is accepted and kept verbatim (see `unknown_values`).
CONNECTION_STATUSES = ("PendingAuth", "Linked", "Unlinked", "Deauthorized")

# Codat's `sourceType` enum (`Connection.sourceType`).
SOURCE_TYPES = ("Accounting", "Banking", "BankFeed", "Commerce", "Expense", "Other", "Unknown")

# Codat's `PullOperation.status` enum ("Dataset status"), the `status` of each
# `dataTypes[]` element of a read event. Only `Complete` means data is there.
COMPLETE = "Complete"
DATASET_STATUSES = (
    "Initial",
    "Queued",
    "Fetching",
    "MapQueued",
    "Mapping",
    "Complete",
    "FetchError",
    "MapError",
    "InternalError",
    "ProcessingQueued",
    "Processing",
    "ProcessingError",
    "ValidationQueued",
    "Validating",
    "ValidationError",
    "AuthError",
    "Cancelled",
    "NotSupported",
    "RateLimitError",
    "PermissionsError",
    "PrerequisiteNotMet",
)
#: Statuses of a fetch still running (should not appear in a completed read).
IN_PROGRESS_STATUSES = frozenset(
    {
        "Initial",
        "Queued",
        "Fetching",
        "MapQueued",
        "Mapping",
        "ProcessingQueued",
        "Processing",
        "ValidationQueued",
        "Validating",
    }
)

# Codat's data types (`DataStatus.dataType` in Codat's OpenAPI document), the
# names `READY_DATA_TYPES` may list.
CODAT_DATA_TYPES = (
    "accountTransactions", "balanceSheet", "bankAccounts", "bankTransactions",
    "billCreditNotes", "billPayments", "bills", "cashFlowStatement", "chartOfAccounts",
    "company", "creditNotes", "customers", "directCosts", "directIncomes", "invoices",
    "itemReceipts", "items", "journalEntries", "journals", "paymentMethods", "payments",
    "profitAndLoss", "purchaseOrders", "salesOrders", "suppliers", "taxRates",
    "trackingCategories", "transfers", "banking-accountBalances", "banking-accounts",
    "banking-transactionCategories", "banking-transactions", "commerce-companyInfo",
    "commerce-customers", "commerce-disputes", "commerce-locations", "commerce-orders",
    "commerce-paymentMethods", "commerce-payments", "commerce-productCategories",
    "commerce-products", "commerce-taxComponents", "commerce-transactions",
)  # fmt: skip

# Bounds on what one read keeps of Codat's `issues[]` (they are for people).
MAX_ISSUES = 5
MAX_ISSUE_TEXT = 300


class InvalidEvent(ValueError):
    """The body is not a Codat event we can apply; the message says why."""


@dataclass(frozen=True, slots=True)
class DataConnectionError:
    """One entry of Codat's `dataConnectionErrors`."""

    status_code: str | None
    status_text: str | None
    error_message: str | None
    errored_on: str | None


@dataclass(frozen=True, slots=True)
class ReadIssue:
    """One entry of a data type read's `issues[]` (Codat's `Issue`)."""

    type: str | None
    message: str | None


@dataclass(frozen=True, slots=True)
class DataTypeRead:
    """One element of a read event's `payload.dataTypes[]`
    (Codat's `dataTypeReadSummary`)."""

    connection_id: str
    data_type: str
    status: str | None
    records_modified: bool = False
    issues: tuple[ReadIssue, ...] = ()

    @property
    def complete(self) -> bool:
        return self.status == COMPLETE


@dataclass(frozen=True, slots=True)
class ConnectionSnapshot:
    """What a connection event says about one connection (Codat's `Connection`)."""

    id: str
    status: str | None
    source_type: str | None = None
    platform_key: str | None = None  # Codat's `integrationKey`
    platform_name: str | None = None
    integration_id: str | None = None
    source_id: str | None = None
    link_url: str | None = None
    created: str | None = None
    errors: tuple[DataConnectionError, ...] = ()


@dataclass(frozen=True, slots=True)
class CodatEvent:
    """One Codat event, reduced to the facts the state machine needs.

    `generated_at` is a canonical UTC timestamp string (fixed width, so string
    order is time order). `synthetic` marks events we made ourselves (API calls,
    reconciliation) rather than received from Codat.
    """

    id: str
    type: str
    generated_at: str
    company_id: str | None
    company_name: str | None = None
    company_description: str | None = None
    connection: ConnectionSnapshot | None = None
    data_types: tuple[DataTypeRead, ...] = ()
    synthetic: bool = False
    source: str = field(default="webhook", compare=False)

    @property
    def handled(self) -> bool:
        return self.type in HANDLED_EVENT_TYPES

    @property
    def initial(self) -> bool:
        return self.type == "read.completed.initial"

    @property
    def read_connection_ids(self) -> tuple[str, ...]:
        return tuple(sorted({d.connection_id for d in self.data_types}))


def canonical_timestamp(value: Any) -> str:
    """ISO 8601 text (Codat's `DateTime`, any of its documented forms) to
    `YYYY-MM-DDTHH:MM:SS.ffffffZ` in UTC. Unqualified times are taken as UTC.

    The result is always that fixed width (it is compared as text: latest
    status, the funnel), so only a time whose UTC form falls in years
    0001..9999 is accepted; `0001-01-01T00:00+14:00` is before year 1 in UTC."""
    if not isinstance(value, str) or not value:
        raise InvalidEvent("generatedDate must be an ISO 8601 date-time string")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise InvalidEvent(f"generatedDate is not an ISO 8601 date-time: {value[:40]!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        utc = parsed.astimezone(UTC)
    except OverflowError as exc:
        raise InvalidEvent(
            f"generatedDate is outside years 0001..9999 in UTC: {value[:40]!r}"
        ) from exc
    return format_timestamp(utc)


def timestamp_seconds(stamp: Any) -> float | None:
    """Epoch seconds of a stored timestamp, or None if it cannot be read.
    Tolerates what was stored before the format was fixed-width (a year of
    fewer than four digits, e.g. `999-01-01T00:00:00.000000Z`)."""
    if not isinstance(stamp, str):
        return None
    head, sep, rest = stamp.strip().partition("-")
    if sep and head.isdigit() and len(head) < 4:
        stamp = f"{head.zfill(4)}-{rest}"
    try:
        parsed = datetime.fromisoformat(stamp)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    except (ValueError, OverflowError):
        return None


def format_timestamp(moment: datetime) -> str:
    """`YYYY-MM-DDTHH:MM:SS.ffffffZ` for an aware UTC datetime: four-digit
    year always (`strftime("%Y")` drops the leading zeros of years < 1000)."""
    return f"{moment.year:04d}-{moment:%m-%dT%H:%M:%S.%f}Z"


def _text(mapping: Mapping[str, Any], key: str, where: str) -> str | None:
    value = mapping.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidEvent(f"{where}.{key} must be a string")
    return value


def _required_text(mapping: Mapping[str, Any], key: str, where: str) -> str:
    value = _text(mapping, key, where)
    if not value:
        raise InvalidEvent(f"{where}.{key} is required")
    return value


def _object(mapping: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = mapping.get(key)
    if not isinstance(value, Mapping):
        raise InvalidEvent(f"{where}.{key} must be an object")
    return value


def _errors(connection: Mapping[str, Any]) -> tuple[DataConnectionError, ...]:
    raw = connection.get("dataConnectionErrors")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidEvent("payload.connection.dataConnectionErrors must be an array")
    errors = []
    for item in raw:
        if not isinstance(item, Mapping):
            raise InvalidEvent("payload.connection.dataConnectionErrors items must be objects")
        where = "payload.connection.dataConnectionErrors[]"
        errors.append(
            DataConnectionError(
                status_code=_scalar_text(item.get("statusCode"), f"{where}.statusCode"),
                status_text=_text(item, "statusText", where),
                error_message=_text(item, "errorMessage", where),
                errored_on=_text(item, "erroredOnUtc", where),
            )
        )
    return tuple(errors)


def _scalar_text(value: Any, where: str) -> str | None:
    """Codat types `statusCode` as a string; tolerate a bare number too."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise InvalidEvent(f"{where} must be a string")


def _connection(payload: Mapping[str, Any]) -> ConnectionSnapshot:
    connection = _object(payload, "connection", "payload")
    where = "payload.connection"
    status = _text(connection, "status", where)
    return ConnectionSnapshot(
        id=_required_text(connection, "id", where),
        status=status,
        source_type=_text(connection, "sourceType", where),
        platform_key=_text(connection, "integrationKey", where),
        platform_name=_text(connection, "platformName", where),
        integration_id=_text(connection, "integrationId", where),
        source_id=_text(connection, "sourceId", where),
        link_url=_text(connection, "linkUrl", where),
        created=_text(connection, "created", where),
        errors=_errors(connection),
    )


def _issues(raw: Any, where: str) -> tuple[ReadIssue, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidEvent(f"{where}.issues must be an array")
    issues = []
    for item in raw[:MAX_ISSUES]:
        if not isinstance(item, Mapping):
            raise InvalidEvent(f"{where}.issues items must be objects")
        kind, message = _text(item, "type", f"{where}.issues[]"), _text(item, "message", where)
        issues.append(
            ReadIssue(
                type=kind[:MAX_ISSUE_TEXT] if kind else kind,
                message=message[:MAX_ISSUE_TEXT] if message else message,
            )
        )
    return tuple(issues)


def _data_types(payload: Mapping[str, Any]) -> tuple[DataTypeRead, ...]:
    """Every element of `dataTypes[]`, whatever connection it names. Elements
    without a connection id or data type name cannot be attributed and are
    left out; an unknown status is kept verbatim."""
    raw = payload.get("dataTypes")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidEvent("payload.dataTypes must be an array")
    where = "payload.dataTypes[]"
    reads = []
    for item in raw:
        if not isinstance(item, Mapping):
            raise InvalidEvent("payload.dataTypes items must be objects")
        connection_id = _text(item, "connectionId", where)
        data_type = _text(item, "dataType", where)
        status = _text(item, "status", where)
        modified = item.get("recordsModified")
        if modified is not None and not isinstance(modified, bool):
            raise InvalidEvent(f"{where}.recordsModified must be a boolean")
        if connection_id and data_type:
            reads.append(
                DataTypeRead(
                    connection_id=connection_id,
                    data_type=data_type,
                    status=status,
                    records_modified=bool(modified),
                    issues=_issues(item.get("issues"), where),
                )
            )
    return tuple(sorted(set(reads), key=_read_order))


def _read_order(read: DataTypeRead) -> tuple[str, str, str, bool]:
    return (read.connection_id, read.data_type, read.status or "", read.records_modified)


def _company_reference(payload: Mapping[str, Any]) -> tuple[str, str | None, str | None]:
    reference = _object(payload, "referenceCompany", "payload")
    where = "payload.referenceCompany"
    return (
        _required_text(reference, "id", where),
        _text(reference, "name", where),
        _text(reference, "description", where),
    )


def parse_codat_event(body: Mapping[str, Any], *, synthetic: bool = False) -> CodatEvent:
    """Build a `CodatEvent` from a Codat webhook body, or raise `InvalidEvent`."""
    if not isinstance(body, Mapping):
        raise InvalidEvent("body must be a JSON object")
    event_id = _required_text(body, "id", "body")
    event_type = _required_text(body, "eventType", "body")
    generated_at = canonical_timestamp(body.get("generatedDate"))
    payload = body.get("payload")
    if not isinstance(payload, Mapping):
        raise InvalidEvent("body.payload must be an object")

    common: dict[str, Any] = {
        "id": event_id,
        "type": event_type,
        "generated_at": generated_at,
        "synthetic": synthetic,
    }
    if event_type in COMPANY_EVENTS:
        return CodatEvent(
            **common,
            company_id=_required_text(payload, "id", "payload"),
            company_name=_text(payload, "name", "payload"),
            company_description=_text(payload, "description", "payload"),
        )
    if event_type in CONNECTION_EVENTS:
        company_id, name, description = _company_reference(payload)
        return CodatEvent(
            **common,
            company_id=company_id,
            company_name=name,
            company_description=description,
            connection=_connection(payload),
        )
    if event_type in READ_EVENTS:
        company_id, name, description = _company_reference(payload)
        return CodatEvent(
            **common,
            company_id=company_id,
            company_name=name,
            company_description=description,
            data_types=_data_types(payload),
        )
    return CodatEvent(**common, company_id=_unhandled_company_id(payload))


def _unhandled_company_id(payload: Mapping[str, Any]) -> str | None:
    """Best effort, for logs only: events we ignore may still name a company."""
    reference = payload.get("referenceCompany")
    if isinstance(reference, Mapping) and isinstance(reference.get("id"), str):
        return reference["id"]
    company_id = payload.get("companyId")
    return company_id if isinstance(company_id, str) else None


def unknown_values(event: CodatEvent) -> list[tuple[str, str]]:
    """(kind, value) for every value of Codat's enums this event carries that
    we do not know: accepted and stored as they are, never taken as linked or
    complete, and counted so that operators see Codat adding a value."""
    found = []
    if not event.handled:
        found.append(("event_type", event.type))
    if event.connection is not None:
        status, source_type = event.connection.status, event.connection.source_type
        if status is not None and status not in CONNECTION_STATUSES:
            found.append(("connection_status", status))
        if source_type is not None and source_type not in SOURCE_TYPES:
            found.append(("source_type", source_type))
    for read in event.data_types:
        if read.status is not None and read.status not in DATASET_STATUSES:
            found.append(("data_type_status", read.status))
    return found
