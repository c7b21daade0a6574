"""Idle and slow clients held open against the web tier: do `/healthz` and a
signed webhook still answer quickly?

Issue 12, defect 3: with sync workers, two clients that announced a body and
went quiet stalled gunicorn. Target: with 50 such connections held open,
`/healthz` and a signed webhook answer in under 100 ms, every time.

Run from the repository root::

    python -m perf.idle_clients                 # ~30 s
    python -m perf.idle_clients --idle 200 --requests 100

Real parts: a private Redis (never the shared 6379) and gunicorn with
production's settings (``app/gunicorn_conf.py``: gthread, 2 workers). For each
kind of idle client, ``--idle`` connections are opened and held while a
client on its own keep-alive connection times ``--requests`` GETs of
`/healthz` and as many signed webhook POSTs (the ``svix`` library's
signature, a new webhook id each). The kinds:

* ``none``: no idle connection (the baseline, measured in the same run);
* ``silent``: connected, nothing sent;
* ``partial headers``: half a request line and headers, then quiet;
* ``announced body``: full headers announcing a 100 kB webhook body, 1 byte
  of it, then quiet (the reproduction in the issue).

Printed per kind: p50, p99 and max latency for each request, and the p50 as
a ratio of the baseline's. Exit status 1 if any answer is wrong or any
latency reaches ``--limit-ms`` (100).
"""

from __future__ import annotations

import argparse
import socket
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx

from perf.loadgen import percentile
from perf.support import code_version, run_main
from tests.support.lifecycles import Lifecycle
from tests.support.processes import TEST_WEBHOOK_SECRET, app_env, start_gunicorn, start_redis
from tests.support.signing import encode_body, signed_headers

KINDS: dict[str, bytes | None] = {
    "none": None,
    "silent": b"",
    "partial headers": b"POST /webhooks/codat HTTP/1.1\r\nHost: x\r\nContent-Ty",
    "announced body": (
        b"POST /webhooks/codat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000\r\n\r\n{"
    ),
}


def hold_open(url: str, count: int, opening: bytes) -> list[socket.socket]:
    parts = urlsplit(url)
    held = []
    for _ in range(count):
        sock = socket.create_connection((parts.hostname, parts.port), timeout=5)
        if opening:
            sock.sendall(opening)
        held.append(sock)
    return held


def timed(call: Callable[[], int], expected: int, samples: list[float]) -> str | None:
    started = time.perf_counter()
    status = call()
    samples.append((time.perf_counter() - started) * 1000)
    return None if status == expected else f"answered {status}, not {expected}"


def post_webhook(client: httpx.Client) -> int:
    body = encode_body(Lifecycle().company("company.created"))
    headers = signed_headers(TEST_WEBHOOK_SECRET, body)  # signed just before it is sent
    return client.post("/webhooks/codat", content=body, headers=headers).status_code


def measure(url: str, requests: int) -> tuple[list[float], list[float], list[str]]:
    health: list[float] = []
    hooks: list[float] = []
    problems: list[str] = []
    with httpx.Client(base_url=url, timeout=10) as client:
        client.get("/healthz")  # the connection, opened before timing
        for _ in range(requests):
            problems.append(timed(lambda: client.get("/healthz").status_code, 200, health))
            problems.append(timed(lambda: post_webhook(client), 202, hooks))
    return health, hooks, [p for p in problems if p]


def describe(name: str, samples: list[float], baseline_p50: float | None) -> str:
    ordered = sorted(samples)
    p50 = percentile(ordered, 0.5)
    ratio = f", p50 {p50 / baseline_p50:.2f}x baseline" if baseline_p50 else ""
    return (
        f"{name:<8} p50 {p50:6.2f} ms  p99 {percentile(ordered, 0.99):6.2f} ms  "
        f"max {ordered[-1]:6.2f} ms{ratio}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=int, default=50, help="connections held open (50)")
    parser.add_argument("--requests", type=int, default=50, help="timed requests of each (50)")
    parser.add_argument("--limit-ms", type=float, default=100.0)
    parser.add_argument("--settle", type=float, default=1.0, help="seconds after opening (1)")
    args = parser.parse_args(argv)

    print(f"perf.idle_clients at {code_version()}: {args.idle} idle connections of each kind")
    redis_server, web, failures = start_redis(), None, []
    try:
        web = start_gunicorn(app_env(redis_server.url, LOG_LEVEL="WARNING"), workers=2)
        baseline: dict[str, float] = {}
        for kind, opening in KINDS.items():
            held = hold_open(web.url, args.idle, opening) if opening is not None else []
            try:
                time.sleep(args.settle if held else 0)
                health, hooks, problems = measure(web.url, args.requests)
            finally:
                for sock in held:
                    sock.close()
            print(f"  {kind} ({len(held)} held):")
            for name, samples in (("healthz", health), ("webhook", hooks)):
                print("    " + describe(name, samples, baseline.get(name)))
                if kind == "none":
                    baseline[name] = percentile(sorted(samples), 0.5)
                if max(samples) >= args.limit_ms:
                    problems.append(f"{name} took {max(samples):.1f} ms")
            failures += [f"{kind}: {problem}" for problem in problems]
            if not web.is_running():
                failures.append(f"gunicorn exited:\n{web.output_tail(15)}")
                break
    finally:
        if web is not None:
            web.stop()
        redis_server.close()
    for failure in failures:
        print(f"FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    run_main(main)
