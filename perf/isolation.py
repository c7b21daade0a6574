"""Isolation between subscribers (issue 15): one subscriber hangs 10 s on every
request, another is healthy; at a steady 200 webhooks/s, how long does the
healthy one wait for each company's `company.ready`?

Target: accepted-to-received p99 <= 250 ms for the healthy subscriber.

Run from the repository root::

    python -m perf.isolation                 # ~60 s: 3 s warm-up + 25 s steady, then settle
    python -m perf.isolation --duration 10 --rate 100

The stack and the load are perf/e2e_latency.py's (its open-loop sender and
plan: happy_path lifecycles, a new company every 25 ms, its events 0.5 s
apart; a private Redis, gunicorn 2 workers, 2 `python -m workers`, LOG_LEVEL
INFO, production's delivery settings), with two subscriptions to `company.ready`
(`--event-types '*'`: to every notification): a healthy
`tests.support.subscriber.Subscriber`, and one that answers each request after
10 s (the sender's cap: every attempt to it times
out). Measured per company: from the latest 2xx among its 5 webhooks to the
healthy subscriber's receipt of its `company.ready`. Also reported: requests
the hanging subscriber received, its breaker state (`GET /api/subscriptions/
<id>`) and its deliveries' attempts. Refused (exit 1): any webhook not
answered 202, a company without exactly one `company.ready` at the healthy
subscriber, a signature the healthy subscriber rejected.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import redis as redis_lib

from perf.e2e_latency import (
    HOST,
    QUEUE,
    TARGET_P99,
    make_plan,
    pcts,
    send_plan,
)
from perf.support import app_env, code_version
from perf.workers import wait_idle
from tests.support.processes import (
    TEST_API_TOKEN,
    start_gunicorn,
    start_redis,
    start_rq_workers,
)
from tests.support.subscriber import Subscriber

AUTH = {"Authorization": f"Bearer {TEST_API_TOKEN}"}
HANG_SECONDS = 10.0


def subscribe(client: httpx.Client, base: str, subscriber: Subscriber, types: list[str]) -> dict:
    answer = client.post(
        f"{base}/api/subscriptions", headers=AUTH, json={"url": subscriber.url, "eventTypes": types}
    )
    answer.raise_for_status()
    subscriber.set(secret=answer.json()["secret"])
    return answer.json()


def latencies(plan, sent, healthy: Subscriber) -> tuple[list[float], list[str]]:
    problems: list[str] = []
    accepted: dict[int, float] = {}
    statuses = Counter()
    for index, item in enumerate(plan.items):
        if item.target != 0:
            continue
        statuses[sent.statuses[index]] += 1
        accepted[item.company] = max(accepted.get(item.company, 0.0), sent.done_at[index])
    if set(statuses) != {202}:
        problems.append(f"webhook answers {dict(statuses)}")
    ready: dict[str, list[float]] = {}
    for received in healthy.of_type("company.ready"):
        ready.setdefault(received.envelope["data"]["companyId"], []).append(received.at)
    window = (sent.started + plan.measured_from, sent.started + plan.measured_until)
    values = []
    for index, company_id in enumerate(plan.companies):
        times = ready.get(company_id, [])
        if len(times) != 1:
            problems.append(f"company {company_id}: {len(times)} company.ready at the healthy one")
            continue
        if window[0] <= accepted[index] < window[1]:
            values.append(times[0] - accepted[index])
    if healthy.state.rejected:
        problems.append(f"{healthy.state.rejected} signatures rejected")
    return values, problems[:5]


def wait_for_ready(healthy: Subscriber, companies: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len({r.envelope["data"]["companyId"] for r in healthy.of_type("company.ready")}) >= (
            companies
        ):
            return
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.isolation", description=__doc__)
    parser.add_argument("--rate", type=float, default=200.0, help="webhooks per second (200)")
    parser.add_argument("--duration", type=float, default=25.0, help="steady seconds (25)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds left out (3)")
    parser.add_argument("--gap", type=float, default=0.5, help="seconds between a company's events")
    parser.add_argument(
        "--event-types",
        default="company.ready",
        help="both subscriptions' event types, comma-separated (company.ready, as "
        "perf.e2e_latency; '*': every notification, about one per webhook)",
    )
    parser.add_argument(
        "--hang-seconds",
        type=float,
        default=HANG_SECONDS,
        help="how long the second subscriber hangs (10; 0: it is healthy too, the baseline)",
    )
    args = parser.parse_args(argv)
    args.probe_rate = 1.0  # the e2e plan's direct probes (to the healthy subscriber): few
    log_dir = Path(tempfile.mkdtemp(prefix="bench-isolation-"))
    print(
        f"isolation: one subscriber hanging {args.hang_seconds:g} s per request, one healthy, "
        f"both subscribed to {args.event_types}"
    )
    print(
        f"  {args.rate:g} webhooks/s open loop, {args.warmup:g} s warm-up + {args.duration:g} s "
        f"measured; gunicorn 2 workers + 2 x python -m workers; code {code_version()}; "
        f"logs {log_dir}"
    )
    processes = []
    with start_redis() as server, Subscriber() as healthy, Subscriber() as hung:
        conn = redis_lib.Redis.from_url(server.url)
        try:
            env = {**app_env(server.url, "INFO"), "ALLOW_PRIVATE_SUBSCRIBER_URLS": "1"}
            workers = start_rq_workers(env, 2, log_dir=log_dir)
            web = start_gunicorn(env, workers=2, log_dir=log_dir)
            processes = [*workers, web]
            wait_idle(conn, workers, QUEUE)
            with httpx.Client(trust_env=False, timeout=10) as client:
                types = args.event_types.split(",")
                good = subscribe(client, web.url, healthy, types)
                bad = subscribe(client, web.url, hung, types)
                if args.hang_seconds > 0:
                    hung.set(mode="hang", hang_seconds=args.hang_seconds)
                web_port = int(web.url.rsplit(":", 1)[1])
                plan = make_plan(args, web_port, healthy.port, good["secret"])
                sent = send_plan(
                    plan, [(HOST, web_port), (HOST, healthy.port)], args.warmup + args.duration + 60
                )
                wait_for_ready(healthy, len(plan.companies), 30)
                values, problems = latencies(plan, sent, healthy)
                view = client.get(f"{web.url}/api/subscriptions/{bad['id']}", headers=AUTH).json()
                listed = client.get(
                    f"{web.url}/api/subscriptions/{bad['id']}/deliveries?limit=100", headers=AUTH
                ).json()["deliveries"]
        finally:
            for proc in processes:
                proc.stop()
            conn.close()
    attempts = Counter(len(d["attempts"]) for d in listed)
    print(f"  webhooks sent: {sum(1 for i in plan.items if i.target == 0):,}")
    print(f"  hanging subscriber: {hung.state.requests} requests received")
    print(f"    its breaker: {view.get('breaker')}")
    print(f"    its latest 100 deliveries, by attempts made: {dict(sorted(attempts.items()))}")
    if problems or not values:
        print("\n!!! FAILED: " + "; ".join(problems or ["nothing measured"]))
        return 1
    p50, p90, p99, top = pcts(values)
    print(
        f"  healthy subscriber, accepted -> company.ready received ({len(values)} companies): "
        f"p50 {p50 * 1000:.1f} ms, p90 {p90 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
        f"max {top * 1000:.1f} ms"
    )
    met = p99 <= TARGET_P99
    print(f"  target p99 <= {TARGET_P99 * 1000:.0f} ms: {'met' if met else 'NOT MET'}")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
