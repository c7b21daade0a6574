"""Metrics kept in Redis (codat_authflow.observability.metrics) and their Prometheus view
(codat_authflow.observability.collector): several writers, failures, exposition."""

from __future__ import annotations

import threading

import fakeredis
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from rq import Queue

from codat_authflow.observability import metrics
from codat_authflow.observability.collector import AuthflowCollector, build_registry
from codat_authflow.storage.keys import Keys


@pytest.fixture(autouse=True)
def no_pending():
    metrics._pending.clear()
    yield
    metrics._pending.clear()


@pytest.fixture
def server():
    return fakeredis.FakeServer()


def client(server) -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=server)


def scrape(redis, *, clock=None) -> dict[str, dict[tuple, float]]:
    """{sample name: {sorted label items: value}}"""
    collector = AuthflowCollector(
        redis,
        Keys(),
        ("authflow", "authflow-deliveries"),
        dead_deliveries_key="authflow:deliveries:dead",
        **({"clock": clock} if clock else {}),
    )
    text = generate_latest(build_registry(collector)).decode()
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def test_counters_from_many_writers_add_up(server):
    def writer():
        redis = client(server)  # each "process" its own connection
        for _ in range(50):
            metrics.record_webhook(redis, "authflow", "queued")
        metrics.record_delivery(redis, "authflow", "delivered", amount=2)

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    samples = scrape(client(server))
    assert samples["authflow_webhooks_received_total"][(("outcome", "queued"),)] == 400
    assert samples["authflow_deliveries_total"][(("outcome", "delivered"),)] == 16


def test_known_outcomes_are_exposed_at_zero_before_any_count(server):
    samples = scrape(client(server))
    webhooks = samples["authflow_webhooks_received_total"]
    assert {dict(k)["outcome"] for k in webhooks} == set(metrics.WEBHOOK_OUTCOMES)
    assert set(webhooks.values()) == {0}
    assert samples["authflow_companies_created_total"] == {(): 0}
    assert samples["authflow_redis_up"] == {(): 1}


def test_a_write_that_fails_is_kept_and_sent_with_the_next_one(server):
    redis = client(server)
    server.connected = False
    assert metrics.record_webhook(redis, "authflow", "unavailable") is False  # never raises
    assert metrics.record_webhook(redis, "authflow", "unavailable") is False
    server.connected = True
    assert metrics.record_webhook(redis, "authflow", "queued") is True
    counts = scrape(redis)["authflow_webhooks_received_total"]
    assert counts[(("outcome", "unavailable"),)] == 2
    assert counts[(("outcome", "queued"),)] == 1
    assert metrics._pending == {}


def test_label_values_cannot_forge_other_labels(server):
    redis = client(server)
    metrics.record_job(redis, "authflow", "a|b", "finished")
    jobs = scrape(redis)["authflow_rq_jobs_total"]
    assert jobs == {(("function", "a/b"), ("outcome", "finished")): 1}
    with pytest.raises(ValueError):
        metrics.counter_update("authflow", metrics.JOBS, ("only-one",))


def test_histogram_buckets_are_cumulative_with_sum_and_count(server):
    redis = client(server)
    for value in (0.01, 0.3, 0.3, 7, 99999):
        metrics.observe(redis, "authflow", metrics.RECEIPT_TO_TRANSITION, value)
    metrics.observe(redis, "authflow", metrics.RECEIPT_TO_TRANSITION, -1)  # clock skew: 0
    samples = scrape(redis)
    buckets = {
        dict(k)["le"]: v
        for k, v in samples["authflow_receipt_to_transition_seconds_bucket"].items()
    }
    assert buckets["0.05"] == 2
    assert buckets["0.5"] == 4
    assert buckets["10.0"] == 5
    assert buckets["3600.0"] == 5
    assert buckets["+Inf"] == 6
    assert samples["authflow_receipt_to_transition_seconds_count"][()] == 6
    assert samples["authflow_receipt_to_transition_seconds_sum"][()] == pytest.approx(100006.61)


def test_gauges_are_read_from_the_data_at_scrape_time(server):
    redis = client(server)
    redis.hset("authflow:stats:states", mapping={"ready": 3, "linking": 1})
    redis.xadd("authflow:inbox", {"body": "x"}, id="1000-0")
    redis.xadd("authflow:inbox", {"body": "y"})
    redis.xadd("authflow:outbox", {"envelope": "{}"})
    redis.xadd("authflow:inbox:dead", {"reason": "r"})
    redis.zadd("authflow:deliveries:dead", {"dlv_1": 1, "dlv_2": 2})
    Queue("authflow", connection=redis).enqueue("workers.jobs.drain_inbox")
    samples = scrape(redis, clock=lambda: 61.0)
    states = {dict(k)["state"]: v for k, v in samples["authflow_companies"].items()}
    assert states == {
        "created": 0,
        "linking": 1,
        "linked": 0,
        "syncing": 0,
        "ready": 3,
        "revoked": 0,
    }
    streams = {dict(k)["stream"]: v for k, v in samples["authflow_stream_entries"].items()}
    assert streams == {
        "inbox": 2,
        "outbox": 1,
        "inbox_dead_letters": 1,
        "outbox_dead_letters": 0,
    }
    assert samples["authflow_inbox_oldest_entry_age_seconds"][()] == 60.0
    assert samples["authflow_delivery_dead_letters"][()] == 2
    jobs = samples["authflow_rq_queue_jobs"]
    assert jobs[(("queue", "authflow"), ("status", "queued"))] == 1
    assert jobs[(("queue", "authflow-deliveries"), ("status", "failed"))] == 0
    assert samples["authflow_rq_workers"][()] == 0


def test_an_unreachable_redis_gives_redis_up_zero_and_nothing_else(server):
    redis = client(server)
    server.connected = False
    samples = scrape(redis)
    assert samples == {"authflow_redis_up": {(): 0}}


def test_record_drain_times_each_applied_event_and_transition(server):
    from codat_authflow.company_updates import Applied
    from codat_authflow.storage.streams import StreamEntry
    from state_machine import CompanyFacts, CompanyState, Outcome, Transition

    redis = client(server)
    entries = [
        StreamEntry(b"1-0", {b"received_at": b"1000", b"webhook_id": b"w1"}),
        StreamEntry(b"2-0", {b"received_at": b"2000", b"webhook_id": b"w2"}),
    ]

    class Event:
        def __init__(self, id_):
            self.id = id_

    transition = Transition(CompanyState.CREATED, CompanyState.LINKING, "ev1", "t", "g")
    applied = Applied(
        outcomes={"c": Outcome(CompanyFacts("c"), CompanyState.LINKING, (transition,))},
        records={},
        failed={},
        notifications={},
    )
    metrics.record_drain(
        redis,
        "authflow",
        entries,
        {"c": [Event("ev1"), Event("ev2")]},
        {"c": [b"1-0", b"2-0"]},
        applied,
        {"applied": 2, "ignored": 1, "rejected": 0, "failed": 0},
        now_ms=4000,
    )
    samples = scrape(redis)
    assert samples["authflow_receipt_to_transition_seconds_sum"][()] == 3.0
    assert samples["authflow_receipt_to_commit_seconds_sum"][()] == 5.0  # 3 s + 2 s
    assert samples["authflow_receipt_to_commit_seconds_count"][()] == 2
    inbox = samples["authflow_inbox_events_total"]
    assert inbox[(("outcome", "applied"),)] == 2 and inbox[(("outcome", "ignored"),)] == 1
