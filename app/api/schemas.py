"""Marshmallow schemas of the journey API: requests (validated) and responses
(documented in `/api/openapi.json`).

Request schemas reject unknown fields (marshmallow's default), so a typo in a
field name is a 400 naming it rather than a silently ignored value. Limits
follow Codat's own `CompanyRequestBody` (name pattern, tags) so that a request
we accept is one Codat accepts.
"""

from __future__ import annotations

from marshmallow import (
    EXCLUDE,
    Schema,
    ValidationError,
    fields,
    pre_load,
    validate,
    validates,
    validates_schema,
)

from codat_authflow.journey.codat.queries import SOURCE_TYPES as SOURCE_TYPE_NAMES

UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
UUID = validate.Regexp(UUID_PATTERN, error="must be a UUID (Codat's ids are UUIDs)")
PLATFORM_KEY = validate.Regexp(
    r"^[a-z]{4}$", error="must be Codat's 4-letter platform key, e.g. gbol"
)
# Codat's CompanyRequestBody.name pattern is ^[A-Za-z0-9\s\-',&@.,?!\s]+$. We
# allow the same characters except `&` (an operator of Codat's query language,
# in which we look a name up to keep creation idempotent) and whitespace other
# than plain spaces (the name is an identifier).
COMPANY_NAME = validate.Regexp(
    r"^[A-Za-z0-9 \-',@.?!]+$",
    error="may hold only letters, digits, spaces and - ' , @ . ? ! (Codat's rules, without &)",
)
# With a customerId the name is only displayed, so Codat's own pattern applies as it is.
CODAT_COMPANY_NAME = validate.Regexp(
    r"^[A-Za-z0-9\s\-',&@.?!]+$",
    error="may hold only the letters A-Z and a-z, digits, spaces and - ' , & @ . ? ! "
    "(Codat's rule for company names); put your own id for the customer in customerId",
)
MAX_CUSTOMER_ID = 200
CUSTOMER_TAG = "customerId"
#: Codat's `sourceType` values, lower-cased (the filter is case-insensitive).
SOURCE_TYPES = tuple(SOURCE_TYPE_NAMES)


def _max_entries(limit: int):
    def check(value: dict) -> None:
        if len(value) > limit:
            raise ValidationError(f"at most {limit} entries")

    return check


# -- requests -------------------------------------------------------------------
# Path schemas: attribute names are the URL's variables, data keys the API's names.


class CompanyPath(Schema):
    company_id = fields.String(
        data_key="companyId",
        required=True,
        validate=UUID,
        metadata={"description": "Codat's company id (a UUID)"},
    )


class ConnectionPath(CompanyPath):
    connection_id = fields.String(
        data_key="connectionId",
        required=True,
        validate=UUID,
        metadata={"description": "Codat's connection id (a UUID)"},
    )


class PlatformPath(Schema):
    platform_key = fields.String(
        data_key="platformKey",
        required=True,
        validate=PLATFORM_KEY,
        metadata={"description": "Codat's 4-letter platform key"},
    )


class CreateCompanyRequest(Schema):
    """`customerId` or `name` (at least one)."""

    BODY_REQUIRED = True  # an empty body is `missing_body`, though no one field is required

    customerId = fields.String(
        validate=validate.Length(min=1, max=MAX_CUSTOMER_ID),
        metadata={
            "description": "Your own id for this customer, any characters (up to "
            f"{MAX_CUSTOMER_ID}): the same customerId again returns the same company. Stored "
            "at Codat as the company tag `customerId`",
            "example": "cust_123",
        },
    )
    name = fields.String(
        validate=validate.Length(min=1, max=100),
        metadata={
            "description": "With customerId: the company's display name in Codat (optional; "
            "default: the customerId with the characters Codat refuses replaced by -). "
            "Without: your own id for this customer, and the same name again returns the "
            "same company. Codat's name rule: letters A-Z a-z, digits, spaces and "
            "- ' , & @ . ? ! (without customerId: no &)",
            "example": "Toft stores",
            "pattern": r"^[A-Za-z0-9\s\-',&@.?!]+$",
        },
    )
    description = fields.String(
        validate=validate.Length(max=1000),
        metadata={"description": "Free text stored with the company in Codat"},
    )
    tags = fields.Dict(
        keys=fields.String(validate=validate.Length(min=1, max=27)),
        values=fields.String(validate=validate.Length(max=100)),
        validate=_max_entries(10),
        metadata={"description": "Up to 10 key-value pairs stored with the company in Codat"},
    )

    @validates("name")
    def _trimmed(self, value: str, **_kwargs) -> None:
        if value != value.strip():
            raise ValidationError("must not start or end with a space")

    @validates("customerId")
    def _printable(self, value: str, **_kwargs) -> None:
        if not value.strip() or any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValidationError("must not be blank or hold control characters")

    @validates_schema
    def _name_or_customer(self, data, **_kwargs) -> None:
        name, customer_id = data.get("name"), data.get("customerId")
        if customer_id is None and name is None:
            raise ValidationError("give customerId (your id for the customer) or name", "name")
        if name is not None:
            try:
                (COMPANY_NAME if customer_id is None else CODAT_COMPANY_NAME)(name)
            except ValidationError as exc:
                raise ValidationError(exc.messages, "name") from exc
        if customer_id is None:
            return
        tags = data.get("tags") or {}
        if CUSTOMER_TAG in tags:
            raise ValidationError("customerId is set from the customerId field", "tags")
        if len(tags) > 9:
            raise ValidationError("at most 9 entries with a customerId (Codat allows 10)", "tags")


class IntegrationsQuery(Schema):
    sourceType = fields.String(
        validate=validate.OneOf(
            SOURCE_TYPES, error="must be one of Codat's source types: " + ", ".join(SOURCE_TYPES)
        ),
        metadata={
            "description": "Only platforms of this type, any case: "
            + ", ".join(SOURCE_TYPE_NAMES.values())
        },
    )
    enabled = fields.Boolean(
        metadata={"description": "Only platforms enabled (true) or disabled (false) in Codat"}
    )

    @pre_load
    def _lower(self, data, **_kwargs):
        data = dict(data)
        if isinstance(data.get("sourceType"), str):
            data["sourceType"] = data["sourceType"].lower()
        return data


class CreateConnectionRequest(Schema):
    platformKey = fields.String(
        required=True,
        validate=PLATFORM_KEY,
        metadata={"description": "The platform to connect (see GET /api/integrations)"},
    )
    linkParams = fields.Dict(
        keys=fields.String(
            validate=validate.Regexp(r"^[A-Za-z0-9._-]{1,64}$", error="not a parameter name")
        ),
        values=fields.String(validate=validate.Length(max=500)),
        validate=_max_entries(10),
        metadata={
            "description": "Query parameters to add to the returned linkUrl, e.g. "
            '{"link.showSandboxIntegrations": "false"}'
        },
    )


class EmptyRequest(Schema):
    """No fields: an empty body or `{}`."""


class LinkCallbackQuery(Schema):
    """Codat's reserved redirect parameters. Unknown ones are ignored (Codat may
    add some, and the redirect URL configured in Codat's portal may carry the
    host's own)."""

    class Meta:
        unknown = EXCLUDE

    @pre_load
    def _blank_is_absent(self, data, **_kwargs):
        """A placeholder Codat had no value for may arrive empty."""
        return {k: v for k, v in data.items() if v != ""}

    statusCode = fields.Integer(strict=False)
    errorMessage = fields.String(validate=validate.Length(max=2000))
    statusText = fields.String(validate=validate.Length(max=2000))
    companyId = fields.String(validate=UUID)
    connectionId = fields.String(validate=UUID)
    integrationId = fields.String(validate=validate.Length(max=100))
    sourceId = fields.String(validate=validate.Length(max=100))
    platform = fields.String(validate=validate.Length(max=100))
    platformName = fields.String(validate=validate.Length(max=200))
    sourceType = fields.String(validate=validate.Length(max=100))
    clientId = fields.String(validate=validate.Length(max=100))


# -- responses (documentation) ------------------------------------------------------


class ErrorBody(Schema):
    status = fields.Integer(required=True)
    code = fields.String(required=True, metadata={"example": "invalid_request"})
    message = fields.String(required=True)
    details = fields.Raw(
        metadata={"description": "Per-field messages, or the Codat call that failed"}
    )


class Error(Schema):
    error = fields.Nested(ErrorBody, required=True)


class LastError(Schema):
    statusCode = fields.String(allow_none=True)
    statusText = fields.String(allow_none=True)
    errorMessage = fields.String(allow_none=True)
    at = fields.String()


class ReadIssue(Schema):
    type = fields.String(allow_none=True)
    message = fields.String(allow_none=True)


class DataTypeReads(Schema):
    dataType = fields.String()
    status = fields.String(
        allow_none=True,
        metadata={"description": "Of the latest read (Complete, FetchError, AuthError, ...)"},
    )
    lastReadAt = fields.String(allow_none=True)
    issues = fields.List(fields.Nested(ReadIssue))
    firstCompleteAt = fields.String(allow_none=True)
    initialReadAt = fields.String(allow_none=True)
    initialCompleteAt = fields.String(allow_none=True)
    recordsModifiedAt = fields.String(allow_none=True)
    lastErrorStatus = fields.String(allow_none=True)
    lastErrorAt = fields.String(allow_none=True)
    lastErrorIssues = fields.List(fields.Nested(ReadIssue))


class ReadinessFailure(Schema):
    connectionId = fields.String()
    dataType = fields.String()
    status = fields.String(allow_none=True)


class Readiness(Schema):
    readyDataTypes = fields.List(
        fields.String(), metadata={"description": "READY_DATA_TYPES; empty means any"}
    )
    met = fields.Boolean()
    connectionIds = fields.List(
        fields.String(), metadata={"description": "Linked connections whose reads meet the gate"}
    )
    missingDataTypes = fields.List(fields.String())
    failing = fields.List(fields.Nested(ReadinessFailure))


class TrackedConnection(Schema):
    id = fields.String()
    status = fields.String(
        metadata={"description": "PendingAuth, Linked, Unlinked, Deauthorized or Deleted"}
    )
    sourceType = fields.String(allow_none=True)
    platformKey = fields.String(allow_none=True)
    platformName = fields.String(allow_none=True)
    integrationId = fields.String(allow_none=True)
    created = fields.String(allow_none=True)
    deletedAt = fields.String(allow_none=True)
    lastError = fields.Nested(LastError, allow_none=True)
    dataTypes = fields.List(fields.Nested(DataTypeReads))


class HistoryEntry(Schema):
    from_ = fields.String(data_key="from")
    to = fields.String()
    at = fields.String()
    eventId = fields.String()
    eventType = fields.String()
    eventGeneratedAt = fields.String()
    synthetic = fields.Boolean(
        metadata={
            "description": "present and true when the cause was an API call or "
            "reconciliation rather than a webhook"
        }
    )


class Company(Schema):
    companyId = fields.String()
    name = fields.String(allow_none=True)
    description = fields.String(allow_none=True)
    state = fields.String(
        metadata={"enum": ["created", "linking", "linked", "syncing", "ready", "revoked"]}
    )
    connections = fields.List(fields.Nested(TrackedConnection))
    readiness = fields.Nested(Readiness)
    initialSync = fields.Dict()
    lastError = fields.Nested(LastError, allow_none=True)
    deletedAt = fields.String(allow_none=True)
    firstSeenAt = fields.String()
    updatedAt = fields.String()
    history = fields.List(fields.Nested(HistoryEntry))


class Integration(Schema):
    platformKey = fields.String()
    name = fields.String()
    sourceType = fields.String(allow_none=True)
    enabled = fields.Boolean()
    logoUrl = fields.String()
    integrationId = fields.String(allow_none=True)
    isBeta = fields.Boolean(allow_none=True)
    isOfflineConnector = fields.Boolean(allow_none=True)
    brandingUrl = fields.String(metadata={"description": "Our cached branding endpoint"})


class Integrations(Schema):
    results = fields.List(fields.Nested(Integration))
    query = fields.String(
        allow_none=True, metadata={"description": "The Codat query sent, unencoded"}
    )


class Branding(Schema):
    platformKey = fields.String()
    logo = fields.Dict(metadata={"description": "Codat's Branding.logo (full, square)"})
    button = fields.Dict(metadata={"description": "Codat's Branding.button (default, hover)"})
    sourceId = fields.String(allow_none=True)


class ConnectionCreated(Schema):
    connectionId = fields.String()
    linkUrl = fields.String(metadata={"description": "Send the user here; valid once, one day"})
    status = fields.String()
    platformKey = fields.String()
    platformName = fields.String(allow_none=True)
    sourceType = fields.String(allow_none=True)
    companyId = fields.String()
    companyState = fields.String()


class LiveConnection(Schema):
    connectionId = fields.String()
    platformKey = fields.String(allow_none=True)
    platformName = fields.String(allow_none=True)
    sourceType = fields.String(allow_none=True)
    status = fields.String(
        allow_none=True,
        metadata={"description": "Codat's status now; null when Codat no longer lists it"},
    )
    created = fields.String(allow_none=True)
    lastSync = fields.String(allow_none=True)
    linkUrl = fields.String(
        allow_none=True,
        metadata={
            "description": "Only while linkUrlState is usable (Link URLs work once, one day)"
        },
    )
    linkUrlState = fields.String(
        allow_none=True,
        metadata={
            "enum": ["usable", "used", "expired", None],
            "description": "For a PendingAuth connection: whether its Link URL can still be "
            "used (used: the user came back from Link, or Codat reports a linking error; "
            "expired: LINK_URL_LIFETIME_SECONDS after created); null otherwise",
        },
    )
    linkUrlExpiresAt = fields.String(allow_none=True)
    action = fields.Dict(
        allow_none=True,
        metadata={
            "description": "What to do when the Link URL is used or expired: create a new "
            "connection for the platform (type, method, path, body, message)"
        },
    )
    dataConnectionErrors = fields.List(fields.Dict())
    tracked = fields.Dict(
        allow_none=True, metadata={"description": "What our state machine knows of it"}
    )
    lastLinkOutcome = fields.Dict(
        allow_none=True, metadata={"description": "What the redirect after Link reported"}
    )


class Connections(Schema):
    companyId = fields.String()
    state = fields.String()
    connections = fields.List(fields.Nested(LiveConnection))


class ConnectionChange(Schema):
    connectionId = fields.String()
    status = fields.String()
    companyId = fields.String()
    companyState = fields.String()


class RefreshQueued(Schema):
    companyId = fields.String()
    status = fields.String(metadata={"example": "queued"})
    companyState = fields.String()


class Erasure(Schema):
    companyId = fields.String()
    status = fields.String(metadata={"example": "erased"})
    erasedAt = fields.String()
    deletedAtCodat = fields.Boolean(
        metadata={"description": "false: Codat had no such company any more"}
    )
    alreadyErased = fields.Boolean()
    notified = fields.List(
        fields.String(),
        metadata={"description": "Notifications sent, e.g. company.revoked (companyDeleted)"},
    )


class ConnectionManagementToken(Schema):
    companyId = fields.String()
    accessToken = fields.String(
        metadata={"description": "Codat's token for its connection management UI (a JWT)"}
    )


class StuckReport(Schema):
    companyId = fields.String()
    state = fields.String()
    reason = fields.String(metadata={"example": "link_expired"})
    message = fields.String()
    connections = fields.List(fields.Dict())
    detectedAt = fields.String()


class StuckReports(Schema):
    results = fields.List(fields.Nested(StuckReport))
