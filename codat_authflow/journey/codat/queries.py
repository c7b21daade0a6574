"""Small pure helpers around Codat's URLs: its query language and Link URLs."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote, unquote_plus, urlencode, urlsplit, urlunsplit

from state_machine.events import SOURCE_TYPES as CODAT_SOURCE_TYPES

#: Our lower-case filter values -> Codat's `sourceType` enum, all seven of them
#: (`Accounting`, `Banking`, `BankFeed`, `Commerce`, `Expense`, `Other`, `Unknown`).
SOURCE_TYPES = {source_type.lower(): source_type for source_type in CODAT_SOURCE_TYPES}


def integrations_query(source_type: str | None = None, enabled: bool | None = None) -> str | None:
    """The `query` parameter of list-integrations, unencoded, in Codat's query
    language: conditions joined by `&&`, e.g. `sourceType=Accounting&&enabled=true`.

    The SDK percent-encodes the whole value once when it builds the URL
    (`?query=sourceType%3DAccounting%26%26enabled%3Dtrue`), which is the
    encoding Codat's guide shows; encoding it here too would double it.
    """
    conditions = []
    if source_type is not None:
        conditions.append(f"sourceType={SOURCE_TYPES[source_type.lower()]}")
    if enabled is not None:
        conditions.append(f"enabled={'true' if enabled else 'false'}")
    return "&&".join(conditions) or None


def encoded_query(query: str) -> str:
    """`query` as it appears in the URL (what Codat's guide calls the encoded query)."""
    return quote(query, safe="")


def add_query_params(url: str, params: Mapping[str, str]) -> str:
    """`url` with `params` added to its query string, whether or not it has one.

    Codat's Link URLs carry a one-time password in their query string, so the
    existing parameters are kept byte for byte (never decoded and re-encoded);
    a parameter we set replaces one of the same name instead of duplicating
    it. The fragment, if any, stays at the end.
    """
    if not params:
        return url
    parts = urlsplit(url)
    replaced = set(params)
    kept = [
        pair
        for pair in parts.query.split("&")
        if pair and unquote_plus(pair.partition("=")[0]) not in replaced
    ]
    added = urlencode(list(params.items()), quote_via=quote)
    query = "&".join([*kept, added])
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
