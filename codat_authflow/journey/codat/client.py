"""`CodatClient`: the one place that calls Codat's Platform API, through
Codat's official Python SDK (`codat-platform`).

Construction choices, each deliberate:

* **Our own httpx client.** The SDK sends every request through the
  `httpx.Client` we pass it (`client=`), so its connection pool, timeouts and
  (for tests) event hooks are ours. `CodatHttpClient` keeps the client's own
  `httpx.Timeout` authoritative: the SDK otherwise turns its `timeout_ms`
  (5 s by default, the same value for connect and read) into a per-request
  timeout that would override ours.
* **No retries inside the SDK** (`RetryConfig("none")`). Its default is an
  exponential backoff of up to an hour on 408/429/5xx, which would hold a web
  request (and a gunicorn worker) hostage. A failed call surfaces at once as a
  `CodatError` (502/504 to our caller, who may retry); reconciliation retries
  on its own schedule.
* **Basic auth** exactly as Codat documents (`using-the-api/authentication`):
  `Authorization: Basic <Base64 of the API key>`. `CODAT_API_KEY` takes
  either of the two values Codat's portal shows (Developers > API keys): the
  raw API key, which we Base64-encode, or the ready-made authorization header
  (`Basic …`), used as it is (see `auth_header`).
* Results come back as plain dicts with **Codat's field names** (the spec's
  `integrationKey`, `sourceType`, ...), so nothing past this module depends on
  SDK model classes.
"""

from __future__ import annotations

import base64
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import structlog
from codat_platform import CodatPlatform
from codat_platform.models.shared.companyrequestbody import CompanyRequestBody
from codat_platform.models.shared.security import Security
from codat_platform.utils.retries import RetryConfig

from codat_authflow.journey.codat.errors import CodatError, translate

log = structlog.get_logger(__name__)

DEFAULT_BASE_URL = "https://api.codat.io"
PAGE_SIZE = 200
MAX_PAGES = 10  # 2 000 results: far more than a company's connections or early pulls

T = TypeVar("T")


def auth_header(api_key: str) -> str:
    """The `Authorization` value for `CODAT_API_KEY`.

    A value starting with `Basic ` is the portal's ready-made authorization
    header and is sent as it is; anything else is the raw API key, sent
    Base64-encoded after `Basic `, as Codat asks.
    """
    key = api_key.strip()
    if key[:6].lower() == "basic ":
        return "Basic " + key[6:].strip()
    return "Basic " + base64.b64encode(key.encode()).decode("ascii")


class CodatHttpClient(httpx.Client):
    """An httpx client whose configured timeouts always apply.

    The SDK passes a per-request `timeout` derived from its own `timeout_ms`;
    we drop it so that the explicit `httpx.Timeout` this client was built with
    (separate connect, read, write and pool limits) is the one in force.
    """

    def request(self, method: str, url: Any, **kwargs: Any) -> httpx.Response:
        kwargs.pop("timeout", None)
        return super().request(method, url, **kwargs)


def build_http_client(
    *,
    connect_timeout: float,
    timeout: float,
    event_hooks: dict[str, list[Callable]] | None = None,
    transport: httpx.BaseTransport | None = None,
) -> CodatHttpClient:
    """The httpx client for Codat: explicit timeouts, no redirects followed,
    a small pool (each web or worker process makes one call at a time)."""
    return CodatHttpClient(
        timeout=httpx.Timeout(timeout, connect=connect_timeout, pool=connect_timeout),
        limits=httpx.Limits(max_connections=10, max_keepalive_connections=5),
        follow_redirects=False,
        event_hooks=event_hooks or {},
        transport=transport,
        headers={"Accept": "application/json"},
    )


def _plain(value: Any) -> Any:
    """Drop the SDK's `additional_properties` bookkeeping from a model dump."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if k != "additional_properties"}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _dump(model: Any) -> dict[str, Any]:
    return _plain(model.model_dump(mode="json", by_alias=True, exclude_none=True))


class CodatClient:
    """Codat's Platform API, one method per operation the journey uses.

    Every method raises `CodatError` (see `codat_authflow.journey.codat.errors`) and nothing else
    for anything that goes wrong between us and Codat.
    """

    def __init__(self, *, api_key: str, base_url: str, http_client: httpx.Client):
        self.base_url = base_url.rstrip("/")
        self.http_client = http_client
        self._sdk = CodatPlatform(
            security=Security(auth_header=auth_header(api_key)),
            server_url=self.base_url,
            client=http_client,
            retry_config=RetryConfig("none"),
        )
        # The generated ApiClient mutates shared request state; one call at a time.
        self._lock = threading.Lock()

    def close(self) -> None:
        self.http_client.close()

    # -- plumbing ---------------------------------------------------------------

    def _call(self, operation: str, fn: Callable[[], T]) -> T:
        try:
            with self._lock:
                return fn()
        except CodatError:
            raise
        except Exception as exc:
            error = translate(exc, operation)
            log.warning(
                "codat.call_failed",
                operation=operation,
                error_code=error.code,
                codat_status=error.codat_status,
                correlation_id=error.correlation_id,
            )
            raise error from exc

    def _pages(self, operation: str, fetch: Callable[[int], Any]) -> Iterator[dict[str, Any]]:
        """Every result of a paged list operation (Codat's `PagingInfo`)."""
        seen = 0
        for page in range(1, MAX_PAGES + 1):
            body = _dump(self._call(operation, lambda page=page: fetch(page)))
            results = body.get("results") or []
            yield from results
            seen += len(results)
            total = body.get("totalResults") or 0
            if len(results) < PAGE_SIZE or (total and seen >= total):
                return
        log.warning("codat.pages_truncated", operation=operation, results=seen)

    # -- companies --------------------------------------------------------------

    def create_company(
        self, name: str, description: str | None = None, tags: dict[str, str] | None = None
    ) -> dict[str, Any]:
        body = CompanyRequestBody(name=name, description=description, tags=tags)
        return _dump(self._call("create-company", lambda: self._sdk.companies.create(request=body)))

    def find_companies_named(self, name: str) -> list[dict[str, Any]]:
        """Companies whose name is exactly `name` (list-companies, `query=name=...`;
        Codat's query matching is not trusted to be exact, so results are
        filtered here too)."""
        found = self._pages(
            "list-companies",
            lambda page: self._sdk.companies.list(
                request={"page": page, "page_size": PAGE_SIZE, "query": f"name={name}"}
            ),
        )
        return [company for company in found if company.get("name") == name]

    def find_companies_tagged(self, tag: str, value: str) -> list[dict[str, Any]]:
        """Companies whose tag `tag` is exactly `value` (list-companies with
        Codat's `tags` filter, `tags=<tag>=<value>`; the results are checked
        here too, so a filter Codat ignored or matched loosely adopts nothing
        wrong)."""
        found = self._pages(
            "list-companies",
            lambda page: self._sdk.companies.list(
                request={"page": page, "page_size": PAGE_SIZE, "tags": f"{tag}={value}"}
            ),
        )
        return [c for c in found if (c.get("tags") or {}).get(tag) == value]

    def delete_company(self, company_id: str) -> None:
        """delete-company: the company, its connections and its cached data, for good."""
        self._call(
            "delete-company",
            lambda: self._sdk.companies.delete(request={"company_id": company_id}),
        )

    def get_connection_management_token(self, company_id: str) -> dict[str, Any]:
        """get-connection-management-access-token (`accessToken`). Codat marks it
        deprecated in favour of get-company-access-token; its answer is unchanged."""

        def fetch():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                return self._sdk.connection_management.get(request={"company_id": company_id})

        return _dump(self._call("get-connection-management-access-token", fetch))

    # -- webhook consumers ------------------------------------------------------

    def list_webhook_consumers(self) -> list[dict[str, Any]]:
        body = _dump(self._call("list-webhook-consumers", self._sdk.webhooks.list_consumers))
        return list(body.get("results") or [])

    def create_webhook_consumer(self, url: str, event_types: list[str]) -> dict[str, Any]:
        return _dump(
            self._call(
                "create-webhook-consumer",
                lambda: self._sdk.webhooks.create_consumer(
                    request={"url": url, "eventTypes": event_types, "disabled": False}
                ),
            )
        )

    def delete_webhook_consumer(self, webhook_id: str) -> None:
        self._call(
            "delete-webhook-consumer",
            lambda: self._sdk.webhooks.delete_consumer(request={"webhook_id": webhook_id}),
        )

    # -- integrations -----------------------------------------------------------

    def list_integrations(self, query: str | None) -> list[dict[str, Any]]:
        return list(
            self._pages(
                "list-integrations",
                lambda page: self._sdk.integrations.list(
                    request={"page": page, "page_size": PAGE_SIZE, "query": query}
                ),
            )
        )

    def get_integration(self, platform_key: str) -> dict[str, Any]:
        return _dump(
            self._call(
                "get-integration",
                lambda: self._sdk.integrations.get(request={"platform_key": platform_key}),
            )
        )

    def get_branding(self, platform_key: str) -> dict[str, Any]:
        return _dump(
            self._call(
                "get-integrations-branding",
                lambda: self._sdk.integrations.get_branding(request={"platform_key": platform_key}),
            )
        )

    # -- connections ------------------------------------------------------------

    def create_connection(self, company_id: str, platform_key: str) -> dict[str, Any]:
        return _dump(
            self._call(
                "create-connection",
                lambda: self._sdk.connections.create(
                    request={
                        "company_id": company_id,
                        "request_body": {"platformKey": platform_key},
                    }
                ),
            )
        )

    def list_connections(self, company_id: str) -> list[dict[str, Any]]:
        return list(
            self._pages(
                "list-connections",
                lambda page: self._sdk.connections.list(
                    request={"company_id": company_id, "page": page, "page_size": PAGE_SIZE}
                ),
            )
        )

    def get_connection(self, company_id: str, connection_id: str) -> dict[str, Any]:
        return _dump(
            self._call(
                "get-connection",
                lambda: self._sdk.connections.get(
                    request={"company_id": company_id, "connection_id": connection_id}
                ),
            )
        )

    def unlink_connection(self, company_id: str, connection_id: str) -> dict[str, Any]:
        return _dump(
            self._call(
                "unlink-connection",
                lambda: self._sdk.connections.unlink(
                    request={
                        "company_id": company_id,
                        "connection_id": connection_id,
                        "update_connection_status": {"status": "Unlinked"},
                    }
                ),
            )
        )

    def delete_connection(self, company_id: str, connection_id: str) -> None:
        self._call(
            "delete-connection",
            lambda: self._sdk.connections.delete(
                request={"company_id": company_id, "connection_id": connection_id}
            ),
        )

    # -- data -------------------------------------------------------------------

    def refresh_company_data(self, company_id: str) -> None:
        self._call(
            "refresh-company-data",
            lambda: self._sdk.refresh_data.all(request={"company_id": company_id}),
        )

    def refresh_data_type(
        self, company_id: str, data_type: str, connection_id: str | None = None
    ) -> dict[str, Any]:
        """refresh-data-type: queue a fetch of one data type (of one connection,
        when `connection_id` is given); Codat answers the queued `PullOperation`."""
        request: dict[str, Any] = {"company_id": company_id, "data_type": data_type}
        if connection_id is not None:
            request["connection_id"] = connection_id
        return _dump(
            self._call(
                "refresh-data-type",
                lambda: self._sdk.refresh_data.by_data_type(request=request),
            )
        )

    def get_data_status(self, company_id: str) -> dict[str, dict[str, Any]]:
        """Codat's `DataStatuses`: data type -> `DataStatus`."""
        return _dump(
            self._call(
                "get-company-data-status",
                lambda: self._sdk.refresh_data.get(request={"company_id": company_id}),
            )
        )

    def list_pull_operations(self, company_id: str) -> list[dict[str, Any]]:
        return list(
            self._pages(
                "list-pull-operations",
                lambda page: self._sdk.refresh_data.list_pull_operations(
                    request={"company_id": company_id, "page": page, "page_size": PAGE_SIZE}
                ),
            )
        )
