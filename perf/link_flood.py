"""A 10,000-request flood of the public ``/link/callback`` for one company:
how much Redis grows, and how many Codat calls it triggers.

Issue 12, defect 1: the redirect page is public, so anyone can send a known
company's id with endless random connection ids. Bounds to hold:

* outcomes are recorded only for connections of that company (from webhooks,
  or confirmed by Codat just now), at most ``MAX_OUTCOMES_PER_COMPANY`` each;
* Codat is asked about at most ``COMPANY_CHECKS_PER_WINDOW`` connections per
  company and ``GLOBAL_CHECKS_PER_WINDOW`` in all, per ``CHECK_WINDOW_SECONDS``;
* flask-limiter keeps one counter per client address, expiring within a minute.

Run from the repository root::

    python -m perf.link_flood                   # 10,000 requests, ~1 min
    python -m perf.link_flood --requests 2000 --addresses 1
    python -m perf.link_flood --codat-confirms-all     # the worst case

Real parts: a private Redis (never the shared 6379), gunicorn with
production's settings (``app/gunicorn_conf.py``, 2 workers,
``TRUSTED_PROXIES=1`` so that every request can claim its own client address
in ``X-Forwarded-For``: a distributed flood, which the per-address limiter
does not stop, so the other bounds must), and a Codat stand-in built from
Codat's spec examples for get-connection (the company's one connection is
found; every other id is Codat's documented 404). Requests carry the longest
``errorMessage`` the page accepts.

Printed: Codat calls against the throttle's allowance for the elapsed
windows, the company's outcome hash (fields, ``MEMORY USAGE``), Redis keys
and ``used_memory`` before and after, by kind. Exit status 1 if a bound is
broken or a response is neither the page (200, or 400 for a connection Codat does not know) nor the
limiter's 429; and the company's real connection must then get its outcome.
"""

from __future__ import annotations

import argparse
import json
import math
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlencode

import httpx
import redis as redis_lib

from codat_authflow.bootstrap import Services
from codat_authflow.journey import link_callback
from codat_authflow.settings import Settings
from codat_authflow.storage.keys import Keys
from perf.loadgen import run_load
from perf.support import code_version, format_counts, run_main
from state_machine import parse_codat_event
from tests.support.lifecycles import Connection, Lifecycle
from tests.support.processes import LOOPBACK, REPO_ROOT, app_env, start_gunicorn, start_redis

SPEC = REPO_ROOT / "tests" / "data" / "Codat-Platform.json"
COMPANY = "0498e921-9b53-4396-a412-4f2f5983b0a2"
CONNECTION = "ee2eb431-c0fa-4dc9-93fa-d29781c12bcd"
LONGEST_ERROR_MESSAGE = 2000  # the query schema's limit (app/link_page.py)


def spec_examples() -> tuple[dict[str, Any], dict[str, Any]]:
    """get-connection's 200 example and the 404 'Data connection not found' one."""
    spec = json.loads(SPEC.read_text())
    operation = spec["paths"]["/companies/{companyId}/connections/{connectionId}"]["get"]
    found = operation["responses"]["200"]["content"]["application/json"]["examples"]
    missing = spec["components"]["responses"]["Not-Found"]["content"]["application/json"]
    return (
        next(iter(found.values()))["value"],
        missing["examples"]["Data connection not found"]["value"],
    )


class FakeCodat:
    """get-connection for one company: CONNECTION is PendingAuth, any other id
    404 (as real Codat answers random ids); with `confirm_all`, every id is a
    PendingAuth connection of the company (the worst case: each check Codat
    answers records an outcome)."""

    def __init__(self, *, confirm_all: bool = False) -> None:
        found, missing = spec_examples()
        self.found = {**found, "id": CONNECTION, "status": "PendingAuth"}
        self.missing = missing
        self.calls: Counter[str] = Counter()
        codat = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                asked = self.path.rsplit("/", 1)[-1]
                known = self.path == f"/companies/{COMPANY}/connections/{CONNECTION}"
                known = known or (confirm_all and self.path.startswith(f"/companies/{COMPANY}/"))
                codat.calls["found" if known else "not found"] += 1
                answer = {**codat.found, "id": asked} if known else codat.missing
                body = json.dumps(answer).encode()
                self.send_response(200 if known else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.url = f"http://{LOOPBACK}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def seed_company(env: dict[str, str], conn: redis_lib.Redis) -> None:
    """The company and its one connection, as Codat's webhooks would leave them."""
    services = Services.build(Settings.from_env(env), conn)
    life = Lifecycle(company_id=COMPANY)
    xero = Connection(CONNECTION, "Accounting", "gbol", "Xero")
    events = [life.company("company.created"), life.connection("connection.created", xero)]
    services.updates.apply({COMPANY: [parse_codat_event(e) for e in events]})


def flood_requests(port: int, count: int, addresses: int) -> list[bytes]:
    junk = "x" * LONGEST_ERROR_MESSAGE
    requests = []
    for n in range(count):
        query = urlencode(
            {
                "companyId": COMPANY,
                "connectionId": str(uuid.uuid4()),
                "statusCode": "500",
                "errorMessage": junk,
            }
        )
        client = n % addresses
        address = f"10.{client // 65536 % 256}.{client // 256 % 256}.{client % 256}"
        requests.append(
            (
                f"GET /link/callback?{query} HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\n"
                f"X-Forwarded-For: {address}\r\n\r\n"
            ).encode("latin-1")
        )
    return requests


def key_kinds(conn: redis_lib.Redis) -> dict[str, tuple[int, int]]:
    """Keys by kind (the prefix up to the first id-like part): (count, bytes)."""
    kinds: dict[str, list[int]] = {}
    for key in conn.scan_iter(count=1000):
        text = key.decode(errors="replace")
        parts = [p for p in text.split(":")[1:4] if len(p) < 20 and not p.isdigit()]
        kind = "limiter counters" if text.startswith("LIMITS") else ":".join(parts)
        entry = kinds.setdefault(kind, [0, 0])
        entry[0] += 1
        entry[1] += int(conn.memory_usage(key) or 0)
    return {kind: (count, size) for kind, (count, size) in sorted(kinds.items())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument(
        "--addresses", type=int, default=10_000, help="distinct client addresses (10,000)"
    )
    parser.add_argument("--connections", type=int, default=8, help="client connections (8)")
    parser.add_argument(
        "--codat-confirms-all",
        action="store_true",
        help="the worst case: Codat answers every id as a connection of the company",
    )
    args = parser.parse_args(argv)

    print(f"perf.link_flood at {code_version()}: {args.requests:,} requests, one company")
    redis_server, web = start_redis(), None
    codat = FakeCodat(confirm_all=args.codat_confirms_all)
    try:
        env = app_env(
            redis_server.url,
            LOG_LEVEL="WARNING",
            TRUSTED_PROXIES="1",
            CODAT_API_KEY="a2V5",
            CODAT_BASE_URL=codat.url,
        )
        conn = redis_lib.Redis.from_url(redis_server.url)
        seed_company(env, conn)
        web = start_gunicorn(env, workers=2)
        before, memory_before = key_kinds(conn), int(conn.info("memory")["used_memory"])
        port = int(web.url.rsplit(":", 1)[1])
        started = time.time()
        load = run_load(
            LOOPBACK,
            port,
            flood_requests(port, args.requests, args.addresses),
            connections=args.connections,
            duration=600,
        )
        elapsed = time.time() - started
        real = httpx.get(
            f"{web.url}/link/callback",
            params={"companyId": COMPANY, "connectionId": CONNECTION, "statusCode": "403"},
            headers={"X-Forwarded-For": "192.0.2.1"},
        )
        print(f"  then the company's real connection: {real.status_code}")
        after, memory_after = key_kinds(conn), int(conn.info("memory")["used_memory"])
        before, after = (before, memory_before), (after, memory_after)
        return report(args, conn, codat, load, elapsed, before, after)
    finally:
        if web is not None:
            web.stop()
        codat.close()
        redis_server.close()


def report(args, conn, codat, load, elapsed, before, after) -> int:
    (kinds_before, memory_before), (kinds_after, memory_after) = before, after
    problems = []
    print(
        f"  {load.completed:,} responses in {elapsed:.1f} s ({load.rate:,.0f}/s): "
        f"{format_counts(load.statuses)}"
        + (f"; transport errors {format_counts(load.errors)}" if load.errors else "")
    )
    if load.completed != args.requests or set(load.statuses) - {200, 400, 429} or load.errors:
        problems.append("every request must get the page (200 or 400) or the limiter's 429")
    windows = math.floor(elapsed / link_callback.CHECK_WINDOW_SECONDS) + 2  # windows touched
    allowance = link_callback.COMPANY_CHECKS_PER_WINDOW * windows
    calls = sum(codat.calls.values())
    print(
        f"  Codat get-connection calls: {calls} ({format_counts(codat.calls)}); the throttle "
        f"allows {link_callback.COMPANY_CHECKS_PER_WINDOW} per company per "
        f"{link_callback.CHECK_WINDOW_SECONDS} s window: {allowance} over the {windows} "
        "windows the run touched"
    )
    if calls > allowance:
        problems.append(f"{calls} Codat calls > {allowance} allowed")
    outcomes = Keys("authflow").link_outcomes(COMPANY)
    fields = conn.hlen(outcomes)
    size = int(conn.memory_usage(outcomes) or 0)
    print(
        f"  outcome hash: {fields} field(s), MEMORY USAGE {size:,} B "
        f"(bound: {link_callback.MAX_OUTCOMES_PER_COMPANY} fields)"
    )
    if CONNECTION.encode() not in conn.hkeys(outcomes):
        problems.append("the real connection's outcome must be recorded")
    if not args.codat_confirms_all and fields != 1:
        problems.append("only the real connection's outcome may be recorded")
    if fields > link_callback.MAX_OUTCOMES_PER_COMPANY:
        problems.append(f"{fields} outcomes > {link_callback.MAX_OUTCOMES_PER_COMPANY}")
    print("  keys by kind, before -> after (count, MEMORY USAGE):")
    for kind in sorted(set(kinds_before) | set(kinds_after)):
        b, a = kinds_before.get(kind, (0, 0)), kinds_after.get(kind, (0, 0))
        print(f"    {kind:<18} {b[0]:>6} keys {b[1]:>9,} B -> {a[0]:>6} keys {a[1]:>9,} B")
    ours_before = sum(n for k, (n, _) in kinds_before.items() if k != "limiter counters")
    ours_after = sum(n for k, (n, _) in kinds_after.items() if k != "limiter counters")
    limiter = kinds_after.get("limiter counters", (0, 0))
    ttls = [conn.ttl(key) for key in list(conn.scan_iter(match="LIMITS*", count=1000))[:200]]
    print(
        f"  used_memory {memory_before:,} -> {memory_after:,} B "
        f"(+{memory_after - memory_before:,}); our keys +{ours_after - ours_before}; "
        f"limiter counters {limiter[0]:,} ({limiter[1]:,} B), TTL <= {max(ttls, default=0)} s"
    )
    if ours_after - ours_before > 20:
        problems.append(f"{ours_after - ours_before} new keys of ours")
    if any(ttl <= 0 or ttl > 60 for ttl in ttls):
        problems.append("a limiter counter without a TTL of at most 60 s")
    for problem in problems:
        print(f"FAILED: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    run_main(main)
