"""Hypothesis strategies for hostile HTTP requests: bodies, encodings, sizes,
nearly-right signatures, wrong timestamps, header soup.

A `WebhookRequest` carries the body and headers exactly as sent; whether it
is validly signed is decided afterwards by the `svix` library itself
(`validly_signed`), never by what the strategy meant to produce.
"""

from __future__ import annotations

import base64
import json
import string
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from hypothesis import strategies as st
from svix.webhooks import Webhook, WebhookVerificationError

from tests.support.lifecycles import LIFECYCLES, build

SECRET = "whsec_" + base64.b64encode(b"fuzzing-the-codat-receiver-0001").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"a-secret-nobody-configured-here").decode()
MAX_BODY = 1024 * 1024  # the receiver's MAX_CONTENT_LENGTH

# Header values travel as latin-1; CR and LF cannot be sent at all.
HEADER_CHARS = "".join(chr(c) for c in range(0x20, 0x7F)) + "".join(
    chr(c) for c in range(0xA0, 0x100)
)
header_text = st.text(alphabet=HEADER_CHARS, max_size=60)


@cache
def codat_bodies() -> tuple[dict[str, Any], ...]:
    """One event body of every type Codat sends in our lifecycles."""
    bodies = {}
    for kind in sorted(LIFECYCLES):
        life, _ = build(kind)
        for body in life.events:
            bodies.setdefault(body["eventType"], body)
    return tuple(bodies.values())


json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=25,
)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    paths = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            paths += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            paths += _paths(child, (*prefix, index))
    return paths


def _set(value: Any, path: tuple, new: Any, delete: bool = False) -> None:
    for step in path[:-1]:
        value = value[step]
    if delete:
        del value[path[-1]]
    else:
        value[path[-1]] = new


oddities = st.sampled_from(
    [
        10**400,  # a 401-digit integer
        -(2**63),
        2**64,
        1e308,
        float("inf"),
        float("nan"),
        "",
        " ",
        "\u0000",
        "\ud800",  # a lone surrogate (json.dumps escapes it)
        "9999-99-99T99:99:99Z",
        "0001-01-01T00:00:00Z",
        [],
        {},
        True,
        None,
        "x" * 5000,
    ]
)


@st.composite
def mutated_codat_body(draw) -> dict[str, Any]:
    """A real Codat event body with up to three fields deleted or replaced."""
    return draw(mutated(draw(st.sampled_from(codat_bodies())), max_changes=3))


@st.composite
def mutated(draw, template: Any, max_changes: int = 2) -> Any:
    """`template` (a valid document) with up to `max_changes` values deleted
    or replaced by random or odd ones."""
    body = json.loads(json.dumps(template))
    for _ in range(draw(st.integers(0, max_changes))):
        paths = _paths(body)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["delete", "random", "odd"]))
        if action == "delete":
            _set(body, path, None, delete=True)
        else:
            _set(body, path, draw(json_values if action == "random" else oddities))
    return body


def _deep(depth: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


@st.composite
def raw_bodies(draw) -> bytes:
    """Bytes on the wire: JSON, near-JSON, other encodings, binary, deep, huge."""
    kind = draw(
        st.sampled_from(
            [
                "codat",
                "codat",
                "codat",
                "mutated",
                "mutated",
                "json",
                "binary",
                "deep",
                "deep_inside",
                "huge_number",
                "big",
                "encoded",
                "truncated",
                "empty",
            ]
        )
    )
    if kind == "codat":
        return json.dumps(draw(st.sampled_from(codat_bodies()))).encode()
    if kind == "mutated":
        return json.dumps(draw(mutated_codat_body())).encode()
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    if kind == "binary":
        return draw(st.binary(max_size=300))
    if kind == "deep":
        return _deep(
            draw(st.sampled_from([50, 1000, 20_000, 200_000])),
            draw(st.sampled_from(["list", "dict"])),
        )
    if kind == "deep_inside":  # a valid envelope whose payload nests deeply
        body = dict(draw(st.sampled_from(codat_bodies())))
        raw = json.dumps({**body, "payload": "@@"}).encode()
        deep = _deep(draw(st.sampled_from([100, 5000, 100_000])), "dict")
        return raw.replace(b'"@@"', deep)
    if kind == "huge_number":
        body = json.dumps(draw(st.sampled_from(codat_bodies()))).encode()
        digits = draw(st.sampled_from([20, 400, 5000, 50_000]))
        return body.replace(b'"payload": {', b'"payload": {"n": ' + b"9" * digits + b", ", 1)
    if kind == "big":
        size = draw(st.sampled_from([MAX_BODY - 200, MAX_BODY, MAX_BODY + 1, 3 * MAX_BODY]))
        body = json.dumps({**draw(st.sampled_from(codat_bodies())), "pad": ""}).encode()
        return body[:-2] + b"x" * max(0, size - len(body)) + b'"}'
    if kind == "encoded":
        text = json.dumps(draw(st.sampled_from(codat_bodies())), ensure_ascii=False) + "é€"
        encoding = draw(st.sampled_from(["utf-16", "utf-32", "latin-1", "cp1252", "utf-8-sig"]))
        return text.encode(encoding, errors="replace")
    if kind == "truncated":
        raw = json.dumps(draw(st.sampled_from(codat_bodies()))).encode()
        return raw[: draw(st.integers(0, len(raw) - 1))]
    return b""


CONTENT_TYPES = [
    "application/json",
    "application/json",
    "application/json; charset=utf-8",
    "application/json; charset=utf-16",
    "Application/JSON",
    "application/jsonx",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "",
    None,
]


@dataclass(frozen=True)
class WebhookRequest:
    body: bytes
    headers: dict[str, str]
    intended: str  # what the strategy meant: valid, or how it is wrong


def _sign(secret: str, webhook_id: str, moment: datetime, body: bytes) -> str:
    return Webhook(secret).sign(webhook_id, moment, body.decode("utf-8", errors="replace"))


@st.composite
def webhook_requests(draw) -> WebhookRequest:
    """Half of them signed exactly as Codat signs (only the body is hostile,
    so the parser behind the signature check gets fuzzed too); the others
    with any mix of wrong headers, timestamps and signatures."""
    body = draw(raw_bodies())
    if draw(st.booleans()):
        webhook_id = f"msg_{draw(st.uuids()).hex}"
        headers = {
            "webhook-id": webhook_id,
            "webhook-timestamp": str(int(datetime.now(UTC).timestamp())),
            "webhook-signature": _sign(SECRET, webhook_id, datetime.now(UTC), body),
            "Content-Type": draw(st.sampled_from(CONTENT_TYPES[:5])),
        }
        return WebhookRequest(body, headers, "clean")
    now = datetime.now(UTC)
    webhook_id = draw(
        st.one_of(
            st.just(f"msg_{draw(st.uuids()).hex}"),
            header_text,
            st.sampled_from(["", " ", "x" * 10_000, "msg_../../etc", "msg_%00"]),
        )
    )
    skew = draw(st.sampled_from([0, 0, 0, -299, 299, -301, 301, -86_400, 10**6, None]))
    moment = now + timedelta(seconds=skew or 0)
    timestamp = draw(
        st.one_of(
            st.just(str(int(moment.timestamp()))),
            st.sampled_from(["", "0", "-1", "1e10", "1.5", "abc", str(10**20), " 17 ", "NaN"]),
        )
        if skew is None
        else st.just(str(int(moment.timestamp())))
    )
    mode = draw(
        st.sampled_from(
            [
                "valid",
                "valid",
                "valid",
                "wrong_secret",
                "flipped",
                "other_body",
                "other_id",
                "v2",
                "no_prefix",
                "truncated",
                "garbage",
                "several_one_valid",
                "missing",
            ]
        )
    )
    try:
        moment_for_signing = datetime.fromtimestamp(int(timestamp), UTC)
    except (ValueError, OverflowError, OSError):
        moment_for_signing = now
    good = _sign(SECRET, webhook_id, moment_for_signing, body)
    signature = {
        "valid": good,
        "wrong_secret": _sign(OTHER_SECRET, webhook_id, moment_for_signing, body),
        "flipped": good[:-3] + ("A" if good[-3] != "A" else "B") + good[-2:],
        "other_body": _sign(SECRET, webhook_id, moment_for_signing, body + b" "),
        "other_id": _sign(SECRET, webhook_id + "x", moment_for_signing, body),
        "v2": "v2," + good.split(",", 1)[1],
        "no_prefix": good.split(",", 1)[1],
        "truncated": good[: len(good) // 2],
        "garbage": draw(header_text),
        "several_one_valid": f"v1,{base64.b64encode(b'nope').decode()} {good} v1,",
        "missing": None,
    }[mode]
    prefix = draw(st.sampled_from(["webhook", "webhook", "svix"]))
    headers: dict[str, str] = {}
    if draw(st.booleans()) or mode == "valid":
        headers[f"{prefix}-id"] = webhook_id
    if draw(st.integers(0, 9)) > 0:
        headers[f"{prefix}-timestamp"] = timestamp
    if signature is not None:
        headers[f"{prefix}-signature"] = signature
    if draw(st.integers(0, 9)) == 0:  # both header families, disagreeing
        headers["svix-id" if prefix == "webhook" else "webhook-id"] = draw(header_text)
    content_type = draw(st.sampled_from(CONTENT_TYPES))
    if content_type is not None:
        headers["Content-Type"] = content_type
    for _ in range(draw(st.integers(0, 2))):
        name = draw(st.text(alphabet=string.ascii_letters + "-", min_size=1, max_size=20))
        headers.setdefault(name, draw(header_text))
    return WebhookRequest(body, headers, mode)


def validly_signed(request: WebhookRequest) -> bool:
    """What the `svix` library says of these exact bytes and headers."""
    headers = {k.lower(): v for k, v in request.headers.items()}
    try:
        Webhook(SECRET).verify(request.body, headers)
    except (WebhookVerificationError, ValueError, TypeError, UnicodeDecodeError):
        return False
    except Exception:  # the library's own parsing of hostile headers
        return False
    return True


# -- dates (issue 12): any ISO 8601 date-time Codat might send, odd years included --------


@st.composite
def iso_timestamps(draw) -> str:
    """ISO 8601 date-times across years 1..9999 and every UTC offset Python
    accepts (±23:59), with or without seconds and fractions; years near the
    ends of the range, and offsets that push them past those ends, are drawn
    often."""
    year = draw(st.sampled_from([1, 2, 999, 1000, 9998, 9999]) | st.integers(1, 9999))
    month, day = draw(st.integers(1, 12)), draw(st.integers(1, 28))
    hour, minute = draw(st.integers(0, 23)), draw(st.integers(0, 59))
    text = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}"
    if draw(st.booleans()):
        text += f":{draw(st.integers(0, 59)):02d}"
        if draw(st.booleans()):
            text += "." + str(draw(st.integers(0, 999_999))).zfill(draw(st.integers(1, 6)))[:6]
    zone = draw(st.sampled_from(["", "Z", "offset", "offset"]))
    if zone == "offset":
        minutes = draw(st.sampled_from([-14 * 60, 14 * 60]) | st.integers(-(24 * 60 - 1), 1439))
        sign = "-" if minutes < 0 else "+"
        text += f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    return text


# -- IPv6 forms that embed an IPv4 address (issue 12: the SSRF guard) ---------------------

PRIVATE_V4_NETWORKS = (
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "100.64.0.0/10",
    "0.0.0.0/8",
    "224.0.0.0/4",
    "240.0.0.0/4",
)


@st.composite
def private_ipv4(draw):
    import ipaddress

    network = ipaddress.ip_network(draw(st.sampled_from(PRIVATE_V4_NETWORKS)))
    return network[draw(st.integers(0, network.num_addresses - 1))]


def embeddings(v4, *, teredo_server=None):
    """Every IPv6 spelling of `v4`: IPv4-compatible, IPv4-mapped, SIIT,
    NAT64 (well-known prefix), 6to4, and Teredo (as server and as client)."""
    import ipaddress

    n = int(v4)
    public = int(ipaddress.IPv4Address(teredo_server or "8.8.8.8"))
    return {
        "compatible": ipaddress.IPv6Address(n),
        "mapped": ipaddress.IPv6Address((0xFFFF << 32) | n),
        "siit": ipaddress.IPv6Address((0xFFFF << 48) | n),
        "nat64": ipaddress.IPv6Address((0x64FF9B << 96) | n),
        "6to4": ipaddress.IPv6Address((0x2002 << 112) | (n << 80) | 1),
        "teredo_server": ipaddress.IPv6Address(
            (0x20010000 << 96) | (n << 64) | (~public & 0xFFFFFFFF)
        ),
        "teredo_client": ipaddress.IPv6Address(
            (0x20010000 << 96) | (public << 64) | (~n & 0xFFFFFFFF)
        ),
    }
