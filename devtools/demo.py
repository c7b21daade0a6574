"""`python -m devtools.demo`: send one complete, signed Codat lifecycle to a
running receiver and print the company moving to `ready`.

The events are Codat's own examples (from its OpenAPI document) with fresh
ids: company.created -> connection.created -> connection.connected ->
read.completed -> read.completed.initial, each signed with the `svix` library
exactly as Codat's deliveries are.

Reads CODAT_WEBHOOK_SECRETS and API_TOKEN from the environment, or from
var/dev.env (written by `scripts/run-stack`); BASE_URL defaults to
http://127.0.0.1:$PORT (8000).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import httpx

from tests.support.lifecycles import build
from tests.support.signing import encode_body, signed_headers

DEV_ENV = Path(__file__).resolve().parent.parent / "var" / "dev.env"


def _setting(name: str) -> str | None:
    if os.environ.get(name):
        return os.environ[name]
    if DEV_ENV.exists():
        for line in DEV_ENV.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == name:
                return value.strip()
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--base-url",
        default=os.environ.get("BASE_URL") or f"http://127.0.0.1:{os.environ.get('PORT', '8000')}",
    )
    parser.add_argument("--lifecycle", default="happy_path")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)

    secrets, token = _setting("CODAT_WEBHOOK_SECRETS"), _setting("API_TOKEN")
    if not secrets or not token:
        print("demo: set CODAT_WEBHOOK_SECRETS and API_TOKEN (or run scripts/run-stack first)")
        return 2
    secret = secrets.split(",")[0].strip()
    life, expected = build(args.lifecycle)
    print(
        f"company {life.company_id}: sending {len(life.events)} signed webhooks to "
        f"{args.base_url}/webhooks/codat"
    )

    with httpx.Client(base_url=args.base_url, timeout=10.0) as client:
        for body in life.events:
            raw = encode_body(body)
            response = client.post(
                "/webhooks/codat", content=raw, headers=signed_headers(secret, raw)
            )
            print(f"  {body['eventType']:<24} -> {response.status_code} {response.json()}")
            if response.status_code >= 300:
                return 1

        seen: list[str] = []
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            response = client.get(
                f"/api/companies/{life.company_id}", headers={"Authorization": f"Bearer {token}"}
            )
            if response.status_code == 200:
                company = response.json()
                for entry in company["history"][len(seen) :]:
                    print(
                        f"  state {entry['from']:>8} -> {entry['to']:<8} "
                        f"(cause: {entry['eventType']})"
                    )
                    seen.append(entry["to"])
                if company["state"] == expected:
                    print(f"company {life.company_id} is {company['state']}")
                    return 0
            time.sleep(0.2)
    print(
        f"demo: the company did not reach {expected!r} within {args.timeout}s; is a worker running?"
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
