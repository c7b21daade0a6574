"""`python -m devtools.demo`: send one complete, signed Codat lifecycle to a
running receiver and print the company moving to its final state (`ready`
for the default lifecycle).

The events are Codat's own examples (from its OpenAPI document) with fresh
ids, signed with the `svix` library exactly as Codat's deliveries are; for
the default lifecycle: company.created -> connection.created ->
connection.connected -> read.completed -> read.completed.initial.

CODAT_WEBHOOK_SECRETS, API_TOKEN, PORT and BIND_HOST come from the
environment, else from var/stack.env (written by `scripts/run-stack` while
it runs), else from var/dev.env. The base URL defaults to
http://BIND_HOST:PORT (http://127.0.0.1:8000).

Exit status: 0 when the company reached the expected state, 1 when it did
not or the server could not be reached, 2 when the secrets are missing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import httpx

from tests.support.lifecycles import LIFECYCLES, build
from tests.support.signing import encode_body, signed_headers

VAR_DIR = Path(os.environ.get("DEVTOOLS_VAR_DIR") or Path(__file__).resolve().parents[1] / "var")
ENV_FILES = (VAR_DIR / "stack.env", VAR_DIR / "dev.env")


class DemoError(Exception):
    """A plain message for the user; no traceback."""


def _setting(name: str) -> str | None:
    if os.environ.get(name):
        return os.environ[name]
    for path in ENV_FILES:
        if path.exists():
            for line in path.read_text().splitlines():
                key, _, value = line.partition("=")
                if key.strip() == name and not key.lstrip().startswith("#"):
                    return value.strip()
    return None


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    host = _setting("BIND_HOST") or "127.0.0.1"
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104 (a bind, not a target)
    parser = argparse.ArgumentParser(
        prog="python -m devtools.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--base-url",
        default=os.environ.get("BASE_URL") or f"http://{host}:{_setting('PORT') or '8000'}",
        help="the web tier (default: %(default)s)",
    )
    parser.add_argument(
        "--lifecycle",
        default="happy_path",
        choices=sorted(LIFECYCLES),
        metavar="NAME",
        help="which company story to send (default: %(default)s); one of: "
        + ", ".join(sorted(LIFECYCLES)),
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds to wait for the final state (default: %(default)s)",
    )
    return parser.parse_args(argv)


def _body(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return response.text.strip()[:200]


def _send(client: httpx.Client, secret: str, events: list[dict]) -> None:
    for body in events:
        raw = encode_body(body)
        response = client.post("/webhooks/codat", content=raw, headers=signed_headers(secret, raw))
        print(f"  {body['eventType']:<24} -> {response.status_code} {_body(response)}")
        if response.status_code >= 300:
            raise DemoError(f"the receiver answered {response.status_code}; stopping")


def _follow(client: httpx.Client, token: str, company_id: str, expected: str, timeout: float):
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get(
            f"/api/companies/{company_id}", headers={"Authorization": f"Bearer {token}"}
        )
        if response.status_code == 401:
            raise DemoError("the API refused API_TOKEN (401): is it the stack's token?")
        if response.status_code == 200:
            company = response.json()
            for entry in company["history"][len(seen) :]:
                print(
                    f"  state {entry['from']:>8} -> {entry['to']:<8} (cause: {entry['eventType']})"
                )
                seen.append(entry["to"])
            if company["state"] == expected:
                print(f"company {company_id} is {company['state']}")
                return
        time.sleep(0.2)
    raise DemoError(
        f"the company did not reach {expected!r} within {timeout:g}s; is a worker running?"
    )


def run(args: argparse.Namespace) -> None:
    secrets, token = _setting("CODAT_WEBHOOK_SECRETS"), _setting("API_TOKEN")
    if not secrets or not token:
        print(
            "demo: set CODAT_WEBHOOK_SECRETS and API_TOKEN (or run scripts/run-stack first)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    secret = secrets.split(",")[0].strip()
    life, expected = build(args.lifecycle)
    print(
        f"company {life.company_id}: sending {len(life.events)} signed webhooks to "
        f"{args.base_url}/webhooks/codat"
    )
    with httpx.Client(base_url=args.base_url, timeout=10.0) as client:
        _send(client, secret, life.events)
        _follow(client, token, life.company_id, expected, args.timeout)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    try:
        run(args)
    except DemoError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    except httpx.ConnectError:
        print(
            f"demo: nothing answers at {args.base_url}: is the stack running? "
            "(scripts/run-stack; or pass --base-url)",
            file=sys.stderr,
        )
        return 1
    except httpx.HTTPError as exc:
        print(f"demo: {args.base_url}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
