"""The adapter around Codat's official Python SDK (`codat-platform`).

`CodatClient` makes every call to Codat's Platform API the authorization
journey needs; `codat_authflow.journey.codat.errors` maps every way a call can fail to our own
exceptions; `codat_authflow.journey.codat.queries` builds Codat query strings and Link URLs.
"""

from codat_authflow.journey.codat.client import (
    DEFAULT_BASE_URL,
    CodatClient,
    CodatHttpClient,
    build_http_client,
)
from codat_authflow.journey.codat.errors import (
    CodatError,
    CodatInvalidResponse,
    CodatNotConfigured,
    CodatNotFound,
    CodatPlanLimit,
    CodatRateLimited,
    CodatRejected,
    CodatTimeout,
    CodatUnreachable,
)
from codat_authflow.journey.codat.queries import add_query_params, integrations_query

__all__ = [
    "DEFAULT_BASE_URL",
    "CodatClient",
    "CodatError",
    "CodatHttpClient",
    "CodatInvalidResponse",
    "CodatNotConfigured",
    "CodatNotFound",
    "CodatPlanLimit",
    "CodatRateLimited",
    "CodatRejected",
    "CodatTimeout",
    "CodatUnreachable",
    "add_query_params",
    "build_http_client",
    "integrations_query",
]
