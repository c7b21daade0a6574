"""Downstream notifications with real parts: gunicorn, `python -m workers`
processes, RQ's scheduler and the clock, and a local HTTP subscriber that
verifies every request with the `standardwebhooks` library and the secret the
API returned."""

from __future__ import annotations

import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis as redis_lib

from state_machine.notifications import notification_id
from tests.support.lifecycles import LIFECYCLES, Lifecycle, build, new_connection
from tests.support.processes import (
    TEST_API_TOKEN,
    TEST_WEBHOOK_SECRET,
    start_gunicorn,
    start_process,
    start_rq_workers,
)
from tests.support.signing import encode_body, signed_headers
from tests.support.subscriber import Subscriber

pytestmark = pytest.mark.integration
AUTH = {"Authorization": f"Bearer {TEST_API_TOKEN}"}


@pytest.fixture
def env(stack_env):
    return {
        **stack_env,
        "ALLOW_PRIVATE_SUBSCRIBER_URLS": "1",
        "DELIVERY_RETRY_SCHEDULE": "0,2,3",
        "INBOX_VISIBILITY_TIMEOUT_SECONDS": "2",
        "RQ_MAINTENANCE_INTERVAL_SECONDS": "2",
        "SWEEP_INTERVAL_SECONDS": "1",
    }


@pytest.fixture
def stack(request, env, tmp_path):
    # A test may ask for a longer retry schedule (indirect parametrization).
    env = {**env, **getattr(request, "param", {})}
    web = start_gunicorn(env, workers=2, log_dir=tmp_path)
    workers = start_rq_workers(env, 2, log_dir=tmp_path)
    clock = start_process(
        [sys.executable, "-m", "workers.clock"], env, name="clock", log_dir=tmp_path
    )
    processes = {
        "web": web,
        "workers": workers,
        "clock": clock,
        "redis_url": env["REDIS_URL"],
        "env": env,
    }
    print(f"process logs in {tmp_path}")
    yield processes
    for process in [clock, *processes["workers"], web]:
        process.stop()


@pytest.fixture
def subscriber():
    with Subscriber() as sub:
        yield sub


def subscribe(base_url, subscriber, event_types):
    response = httpx.post(
        f"{base_url}/api/subscriptions",
        headers=AUTH,
        json={"url": subscriber.url, "eventTypes": event_types},
    )
    assert response.status_code == 201, response.text
    subscriber.set(secret=response.json()["secret"])
    return response.json()


def deliver_lifecycles(base_url, lifecycles, rng, *, repeats=(1, 3)):
    deliveries = []
    for life, _ in lifecycles:
        for n, body in enumerate(life.events):
            raw = encode_body(body)
            deliveries += [(f"msg_{body['id']}_{n}", raw)] * rng.randint(*repeats)
    rng.shuffle(deliveries)

    def post(delivery):
        webhook_id, raw = delivery
        headers = signed_headers(TEST_WEBHOOK_SECRET, raw, webhook_id=webhook_id)
        response = httpx.post(
            f"{base_url}/webhooks/codat", content=raw, headers=headers, timeout=10
        )
        assert response.status_code in (200, 202), response.text
        return response.status_code

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(post, deliveries))


def ready_ids_by_company(subscriber):
    ids: dict[str, set[str]] = {}
    for received in subscriber.of_type("company.ready"):
        ids.setdefault(received.envelope["data"]["companyId"], set()).add(received.webhook_id)
    return ids


def test_a_subscriber_down_at_first_gets_everything_once_it_is_up(stack, subscriber):
    base_url = stack["web"].url
    subscription_id = subscribe(base_url, subscriber, ["*"])["id"]
    subscriber.stop()  # connections refused for the first attempts
    life, _ = build("happy_path")
    deliver_lifecycles(base_url, [(life, "ready")], random.Random(1), repeats=(1, 1))

    def deliveries():
        return httpx.get(
            f"{base_url}/api/subscriptions/{subscription_id}/deliveries", headers=AUTH
        ).json()["deliveries"]

    def company_state():
        return (
            httpx.get(f"{base_url}/api/companies/{life.company_id}", headers=AUTH)
            .json()
            .get("state")
        )

    # Up again only once every notification had its first attempt refused
    # (however slow the machine is to drain and relay).
    subscriber.wait_for(
        lambda _: (
            company_state() == "ready"
            and (listed := deliveries())
            and any(d["type"] == "company.ready" for d in listed)
            and all(d["attempts"] for d in listed)
        ),
        timeout=60,
    )
    subscriber.start()
    subscriber.wait_for(lambda s: len(s.of_type("company.ready")) == 1, timeout=30)

    subscriber.wait_for(lambda s: all(d["status"] == "delivered" for d in deliveries()), timeout=30)
    listed = deliveries()
    # How many state changes a shuffled lifecycle passes through depends on the
    # order: at least one state change and the company.ready.
    assert len(listed) >= 2
    assert subscriber.state.rejected == 0
    assert sorted(r.webhook_id for r in subscriber.received) == sorted(
        d["notificationId"] for d in listed
    )
    assert all(d["attempts"][0]["error"] for d in listed), "first attempts were refused"
    assert all(d["attempts"][-1]["statusCode"] == 200 for d in listed)


def test_an_always_failing_subscriber_gets_dead_letters_then_a_replay(stack, subscriber):
    base_url = stack["web"].url
    subscription = subscribe(base_url, subscriber, ["company.ready"])
    subscriber.set(mode="fail")
    life, _ = build("happy_path")
    deliver_lifecycles(base_url, [(life, "ready")], random.Random(2), repeats=(1, 1))
    conn = redis_lib.Redis.from_url(stack["redis_url"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and conn.zcard("authflow:deliveries:dead") == 0:
        time.sleep(0.2)
    assert conn.zcard("authflow:deliveries:dead") == 1
    assert subscriber.state.requests == 3  # the whole (test) schedule: 0, 2, 3 s
    assert subscriber.received == []

    subscriber.set(mode="ok")
    response = httpx.post(
        f"{base_url}/api/deliveries/replay",
        headers=AUTH,
        json={"subscriptionId": subscription["id"]},
    )
    assert response.json()["replayed"] == 1
    subscriber.wait_for(lambda s: len(s.of_type("company.ready")) == 1, timeout=20)
    [ready] = subscriber.of_type("company.ready")
    assert ready.envelope["data"]["companyId"] == life.company_id
    assert conn.zcard("authflow:deliveries:dead") == 0


# Killed workers and a hanging subscriber on a busy machine can use up a short
# schedule: this test is about exactly-once, not about dead letters.
@pytest.mark.parametrize(
    "stack", [{"DELIVERY_RETRY_SCHEDULE": "0,1,2,4,8,15,30"}], indirect=True, ids=["patient"]
)
def test_company_ready_once_per_company_with_workers_killed_midway(
    stack, subscriber, env, tmp_path
):
    """Shuffled, duplicated Codat deliveries for many companies; workers are
    SIGKILLed while they drain and while a delivery hangs. Nothing is lost:
    every ready company yields exactly one company.ready id at the subscriber."""
    base_url = stack["web"].url
    subscribe(base_url, subscriber, ["company.ready"])
    rng = random.Random(3)
    lifecycles = [build(kind) for kind in sorted(LIFECYCLES) for _ in range(2)]

    subscriber.set(mode="hang", hang_seconds=2)
    deliver_lifecycles(base_url, lifecycles, rng)
    for round_ in range(3):
        time.sleep(0.7)
        victim = stack["workers"].pop(0)
        victim.kill()
        stack["workers"] += start_rq_workers(
            stack["env"], 1, log_dir=tmp_path / f"respawn-{round_}"
        )
    subscriber.set(mode="ok")

    # Which companies end ready follows from the events alone (the oracle).
    conn = redis_lib.Redis.from_url(stack["redis_url"])
    expected_ready = {life.company_id for life, state in lifecycles if state == "ready"}
    subscriber.wait_for(lambda s: set(ready_ids_by_company(s)) >= expected_ready, timeout=240)
    by_company = ready_ids_by_company(subscriber)
    with httpx.Client(base_url=base_url, headers=AUTH) as client:
        for life, state in lifecycles:
            assert client.get(f"/api/companies/{life.company_id}").json()["state"] == state
    # Once per company and basis: the first readiness has the company's own
    # id; only a platform linked after a deletion may add one more.
    kinds = {life.company_id: life for life, _ in lifecycles}
    for company_id, ids in by_company.items():
        assert notification_id("company.ready", company_id) in ids, company_id
        platforms = len(
            {
                e["payload"]["connection"]["id"]
                for e in kinds[company_id].events
                if "connection" in e["payload"]
            }
        )
        assert len(ids) <= platforms, (company_id, ids)
    assert subscriber.state.rejected == 0
    assert conn.xlen("authflow:inbox") == 0


@pytest.fixture
def gated_stack(env, tmp_path):
    gated = {**env, "READY_DATA_TYPES": "balanceSheet,profitAndLoss"}
    web = start_gunicorn(gated, workers=1, log_dir=tmp_path)
    workers = start_rq_workers(gated, 2, log_dir=tmp_path)
    yield {"web": web}
    for process in [*workers, web]:
        process.stop()


def test_with_a_gate_company_ready_comes_once_after_the_last_required_data_type(
    gated_stack, subscriber
):
    """Codat sends `read.completed.initial` the first time each data type is
    stored. With READY_DATA_TYPES=balanceSheet,profitAndLoss, initial reads
    arriving one data type at a time, shuffled and repeated, make the company
    ready exactly once, and only after the last required one."""
    base_url = gated_stack["web"].url
    subscribe(base_url, subscriber, ["*"])
    rng = random.Random(9)
    life, connection = Lifecycle(), new_connection()
    life.company("company.created")
    life.connection("connection.created", connection)
    life.connection("connection.connected", connection)
    required = ["balanceSheet", "profitAndLoss"]
    rng.shuffle(required)
    reads = {
        name: life.read("read.completed.initial", connection, data_types=(name,))
        for name in ["invoices", "bankAccounts", *required]
    }
    last = reads.pop(required[-1])
    before = [e for e in life.events if e is not last]
    rng.shuffle(before)

    def post(body, n):
        raw = encode_body(body)
        headers = signed_headers(TEST_WEBHOOK_SECRET, raw, webhook_id=f"msg_{body['id']}_{n}")
        response = httpx.post(f"{base_url}/webhooks/codat", content=raw, headers=headers)
        assert response.status_code in (200, 202), response.text

    for n, body in enumerate(before * 2):  # every delivery twice
        post(body, n)

    def company():
        return httpx.get(f"{base_url}/api/companies/{life.company_id}", headers=AUTH).json()

    def read_types(view):
        return {d["dataType"] for c in view.get("connections", []) for d in c["dataTypes"]}

    subscriber.wait_for(lambda _: read_types(company()) == set(reads), timeout=30)
    view = company()
    assert view["state"] == "syncing"
    assert view["readiness"]["missingDataTypes"] == [required[-1]]
    assert subscriber.of_type("company.ready") == []

    post(last, 0)
    post(last, 1)
    subscriber.wait_for(lambda s: len(s.of_type("company.ready")) == 1, timeout=30)
    time.sleep(1.0)  # a second one would have come by now
    (ready,) = subscriber.of_type("company.ready")
    data = ready.envelope["data"]
    assert ready.webhook_id == notification_id("company.ready", life.company_id)
    assert data["readyDataTypes"] == ["balanceSheet", "profitAndLoss"]
    assert {d["type"] for d in data["dataTypes"]} >= {"balanceSheet", "profitAndLoss"}
    assert data["cause"]["eventId"] == last["id"]
    assert company()["state"] == "ready"
