"""The whole pipeline with real parts: gunicorn (2 workers), `python -m workers`
processes, a private Redis, webhooks signed by the `svix` library."""

from __future__ import annotations

import json
import random
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis as redis_lib
from rq import Queue
from rq.registry import FailedJobRegistry

from state_machine import CompanyFacts, apply_events, parse_codat_event
from tests.support.lifecycles import LIFECYCLES, Lifecycle, build, new_connection
from tests.support.processes import (
    TEST_API_TOKEN,
    TEST_WEBHOOK_SECRET,
    free_port,
    start_gunicorn,
    start_rq_workers,
)
from tests.support.signing import encode_body, signed_headers

pytestmark = pytest.mark.integration
AUTH = {"Authorization": f"Bearer {TEST_API_TOKEN}"}


def deliveries_of(bodies, rng):
    """Each event delivered 1-3 times under one webhook id, all shuffled."""
    deliveries = []
    for n, body in enumerate(bodies):
        raw = encode_body(body)
        webhook_id = f"msg_{body['id']}_{n}"
        deliveries += [(webhook_id, raw)] * rng.randint(1, 3)
    rng.shuffle(deliveries)
    return deliveries


def post_all(base_url, deliveries, threads=8):
    def post(delivery):
        webhook_id, raw = delivery
        headers = signed_headers(TEST_WEBHOOK_SECRET, raw, webhook_id=webhook_id)
        with httpx.Client(base_url=base_url, timeout=10) as client:
            return webhook_id, client.post("/webhooks/codat", content=raw, headers=headers)

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(post, deliveries))


def wait_until_drained(conn, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if conn.xlen("authflow:inbox") == 0 and conn.llen("rq:queue:authflow") == 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"inbox not drained: {conn.xlen('authflow:inbox')} entries left")


def test_shuffled_duplicated_lifecycles_end_in_the_right_state(running_stack, redis_url):
    rng = random.Random(20261128)
    lifecycles = [build(kind) for kind in sorted(LIFECYCLES)]
    bodies = [body for life, _ in lifecycles for body in life.events]
    deliveries = deliveries_of(bodies, rng)

    results = post_all(running_stack.base_url, deliveries)

    first_answers = {}
    for webhook_id, response in results:
        assert response.status_code in (200, 202), response.text
        first_answers.setdefault(webhook_id, []).append(response.status_code)
    # Exactly one acceptance per webhook id; every repeat is a duplicate.
    assert all(
        sorted(codes)[-1] == 202 and codes.count(202) == 1 for codes in first_answers.values()
    )

    conn = redis_lib.Redis.from_url(redis_url)
    wait_until_drained(conn)
    with httpx.Client(base_url=running_stack.base_url, headers=AUTH) as client:
        for life, expected in lifecycles:
            company = client.get(f"/api/companies/{life.company_id}").json()
            oracle = apply_events(
                CompanyFacts(company_id=life.company_id),
                [parse_codat_event(b) for b in life.events],
            )
            assert company["state"] == expected == oracle.state.value, life.company_id
            assert company["history"], "transitions are recorded"
            assert company["history"][-1]["to"] == expected
            chain = ["created"] + [h["to"] for h in company["history"]]
            assert all(h["from"] == chain[i] for i, h in enumerate(company["history"]))
    assert FailedJobRegistry("authflow", connection=conn).count == 0
    assert conn.xlen("authflow:inbox:dead") == 0


def _bad_requests():
    life = Lifecycle()
    good = encode_body(life.connection("connection.created", new_connection()))
    headers = signed_headers(TEST_WEBHOOK_SECRET, good)
    forged = signed_headers("whsec_" + "Zm9yZ2VkLXNlY3JldC0wMDAwMDAwMDAwMDA=", good)
    huge = b'{"pad":"' + b"x" * (1024 * 1024 + 10) + b'"}'
    not_json = b"definitely not json"
    missing = json.dumps({"id": "x", "payload": {}}).encode()
    stale = signed_headers(
        TEST_WEBHOOK_SECRET,
        good,
        timestamp=__import__("datetime").datetime(2020, 1, 1, tzinfo=__import__("datetime").UTC),
    )
    return [
        ("no signature", good, {"Content-Type": "application/json"}, 401),
        ("forged", good, forged, 401),
        ("tampered", good.replace(b"PendingAuth", b"Linked"), headers, 401),
        ("stale", good, stale, 401),
        ("too large", huge, signed_headers(TEST_WEBHOOK_SECRET, huge), 413),
        ("text/plain", good, {**headers, "Content-Type": "text/plain"}, 415),
        ("not json", not_json, signed_headers(TEST_WEBHOOK_SECRET, not_json), 400),
        ("missing fields", missing, signed_headers(TEST_WEBHOOK_SECRET, missing), 400),
    ]


def test_bad_input_gets_its_status_and_leaves_nothing_in_redis(running_stack, redis_url):
    conn = redis_lib.Redis.from_url(redis_url)
    before = set(conn.keys("*"))
    for name, body, headers, status in _bad_requests():
        # A connection each: after a 413 the server closes it without reading
        # the rest of the body, so it cannot be reused.
        with httpx.Client(base_url=running_stack.base_url, timeout=10) as client:
            response = client.post("/webhooks/codat", content=body, headers=headers)
        assert response.status_code == status, name
        assert response.json()["error"]["status"] == status, name
    assert conn.keys("authflow:seen:*") == []
    assert conn.xlen("authflow:inbox") == 0
    assert conn.llen("rq:queue:authflow") <= 1  # the workers' own start-up drain, if any
    # Rejections are counted (authflow:metrics:*); nothing of the input is kept.
    new_keys = set(conn.keys("*")) - before
    assert {k for k in new_keys if not k.startswith((b"rq:", b"authflow:metrics:"))} == set()


def test_unreachable_redis_is_503_and_not_ready(stack_env, tmp_path):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    web = start_gunicorn({**stack_env, "REDIS_URL": dead}, workers=1, log_dir=tmp_path)
    try:
        life = Lifecycle()
        raw = encode_body(life.company("company.created"))
        response = httpx.post(
            web.url + "/webhooks/codat",
            content=raw,
            headers=signed_headers(TEST_WEBHOOK_SECRET, raw),
            timeout=10,
        )
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "storage_unavailable"
        assert httpx.get(web.url + "/readyz").status_code == 503
        assert httpx.get(web.url + "/healthz").status_code == 200
    finally:
        web.stop()


def test_concurrent_workers_on_one_company_lose_no_update(stack_env, redis_url, tmp_path):
    """Four worker processes apply one company's events at the same time, one
    event per batch, so their transactions interleave on the same key."""
    life = Lifecycle()
    connections = [new_connection("Banking") for _ in range(40)]
    life.company("company.created")
    for connection in connections:
        life.connection("connection.created", connection)
        life.connection("connection.connected", connection)
    life.read("read.completed.initial", *connections[:3])

    env = {**stack_env, "INBOX_BATCH_SIZE": "1", "INBOX_VISIBILITY_TIMEOUT_SECONDS": "2"}
    conn = redis_lib.Redis.from_url(redis_url)
    from codat_authflow.bootstrap import Services
    from codat_authflow.settings import Settings

    ctx = Services.build(Settings.from_env(env), conn)
    ctx.inbox.ensure_group()
    for n, body in enumerate(life.events):
        ctx.inbox.accept(f"msg_{n}", encode_body(body), 0)
    queue = Queue("authflow", connection=conn)
    for _ in range(8):
        queue.enqueue("workers.jobs.drain_inbox")

    workers = start_rq_workers(env, 4, log_dir=tmp_path)
    try:
        wait_until_drained(conn, timeout=60)
    finally:
        for worker in workers:
            worker.stop()

    record = ctx.store.get(life.company_id)
    linked = {c.id for c in record.facts.connections if c.status == "Linked"}
    assert linked == {c.id for c in connections}
    oracle = apply_events(
        CompanyFacts(company_id=life.company_id), [parse_codat_event(b) for b in life.events]
    )
    assert record.facts == oracle.facts
    assert record.state.value == "ready"
    conflicts = sum(
        (tmp_path / f"worker-{i}.stdout").read_text().count("company.write_conflict")
        for i in range(1, 5)
        if (tmp_path / f"worker-{i}.stdout").exists()
    )
    assert conflicts > 0, "the workers never contended; the test proved nothing"
