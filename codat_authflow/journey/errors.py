"""Refusals of the journey itself (not Codat's): each carries our HTTP status,
a stable code and a message that says what to do."""

from __future__ import annotations

from typing import Any


class JourneyError(Exception):
    status = 400
    code = "journey_error"

    def __init__(self, message: str, details: Any = None, *, retry_after: int | None = None):
        super().__init__(message)
        self.message = message
        self.details = details
        self.retry_after = retry_after


class CompanyNotFound(JourneyError):
    status = 404
    code = "company_not_found"

    def __init__(self, company_id: str):
        super().__init__(
            f"no company {company_id!r} is known here; create it with POST /api/companies"
        )


class CompanyDeleted(JourneyError):
    status = 409
    code = "company_deleted"

    def __init__(self, company_id: str):
        super().__init__(f"company {company_id!r} was deleted in Codat; create a new company")


class ConnectionNotFound(JourneyError):
    status = 404
    code = "connection_not_found"


class AccountingConnectionExists(JourneyError):
    status = 409
    code = "accounting_connection_exists"


class CreationInProgress(JourneyError):
    status = 409
    code = "creation_in_progress"
