"""The exact `Authorization` header Codat receives for each form of
`CODAT_API_KEY` Codat's portal shows (Developers > API keys): the raw API key,
which Codat wants Base64-encoded, and the ready-made authorization header."""

from __future__ import annotations

import base64

import httpx
import pytest

from codat_authflow.journey.codat import CodatClient, build_http_client
from codat_authflow.journey.codat.client import auth_header

RAW_KEY = "Fp9Qv3ZsXb0iT2nLwE7yUa4kRc8mHd6gJo1xNe5P"
ENCODED = base64.b64encode(RAW_KEY.encode()).decode()


def recording_client(api_key: str) -> tuple[CodatClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"logo": {}, "button": {}, "sourceId": "x"})

    http = build_http_client(connect_timeout=1, timeout=1, transport=httpx.MockTransport(answer))
    return CodatClient(api_key=api_key, base_url="https://codat.test", http_client=http), seen


@pytest.mark.parametrize(
    ("configured", "sent"),
    [
        (RAW_KEY, f"Basic {ENCODED}"),  # the raw key, as the portal's "API key" column shows it
        (f"  {RAW_KEY}\n", f"Basic {ENCODED}"),  # pasted with blanks around it
        (f"Basic {ENCODED}", f"Basic {ENCODED}"),  # the portal's "Authorization header" column
        (f"basic {ENCODED} ", f"Basic {ENCODED}"),
    ],
)
def test_codat_receives_basic_and_the_base64_of_the_key(configured: str, sent: str):
    codat, seen = recording_client(configured)
    codat.get_branding("gbol")
    (request,) = seen
    assert request.headers["authorization"] == sent
    assert request.url.path == "/integrations/gbol/branding"
    assert auth_header(configured) == sent


def test_a_raw_key_is_never_sent_unencoded():
    codat, seen = recording_client(RAW_KEY)
    codat.get_branding("gbol")
    assert RAW_KEY not in seen[0].headers["authorization"]
    assert base64.b64decode(seen[0].headers["authorization"].split(" ", 1)[1]) == RAW_KEY.encode()
