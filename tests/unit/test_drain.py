"""The drain job against fakeredis: apply, acknowledge, isolate poison, reclaim."""

from __future__ import annotations

import copy
import json
import time

import fakeredis
import pytest
import structlog.testing

from codat_authflow.bootstrap import Services
from codat_authflow.observability.metrics import read_counters
from codat_authflow.settings import Settings
from codat_authflow.storage.keys import INBOX_GROUP
from state_machine import CompanyFacts, CompanyState, apply_events
from tests.support.lifecycles import build, spec_example
from tests.support.signing import encode_body
from workers.jobs import drain

ENV = {
    "REDIS_URL": "redis://unused",
    "API_TOKEN": "t",
    "CODAT_WEBHOOK_SECRETS": "whsec_dGVzdC1zZWNyZXQ=",
    "INBOX_VISIBILITY_TIMEOUT_SECONDS": "1",
    "INBOX_MAX_DELIVERIES": "2",
}


@pytest.fixture
def ctx():
    context = Services.build(Settings.from_env(ENV), fakeredis.FakeRedis())
    context.inbox.ensure_group()
    return context


def accept_all(ctx, bodies, prefix="msg"):
    for i, body in enumerate(bodies):
        ctx.inbox.accept(f"{prefix}_{i}", encode_body(body), 0)


def test_a_drained_lifecycle_reaches_its_state_and_leaves_the_inbox_empty(ctx):
    life, expected = build("reconnected")
    accept_all(ctx, life.events)
    totals = drain(ctx)
    assert totals == {
        "applied": len(life.events),
        "ignored": 0,
        "rejected": 0,
        "failed": 0,
        "notifications": 6 + 1 + 1,  # state changes, company.ready once, company.revoked
    }
    record = ctx.store.get(life.company_id)
    assert record.state == CompanyState(expected)
    assert [h.to_state for h in record.history] == [
        "linking",
        "linked",
        "syncing",
        "ready",
        "revoked",
        "ready",
    ]
    assert ctx.inbox.backlog() == 0
    assert ctx.redis.xpending(ctx.inbox.keys.inbox, INBOX_GROUP)["pending"] == 0
    assert ctx.store.state_counts() == {"ready": 1}


def test_state_counts_follow_every_company(ctx):
    lifecycles = [build(kind) for kind in ("happy_path", "failed_only", "company_deleted")]
    for n, (life, _) in enumerate(lifecycles):
        accept_all(ctx, life.events, prefix=f"c{n}")
    drain(ctx)
    counts = {state: n for state, n in ctx.store.state_counts().items() if n}
    assert counts == {"ready": 1, "linking": 1, "revoked": 1}


def test_history_is_bounded(ctx):
    ctx = Services.build(Settings.from_env({**ENV, "COMPANY_HISTORY_LIMIT": "3"}), ctx.redis)
    life, _ = build("reconnected")
    accept_all(ctx, life.events)
    drain(ctx)
    history = ctx.store.get(life.company_id).history
    assert [h.to_state for h in history] == ["ready", "revoked", "ready"]


def test_ignored_events_are_recorded_and_acknowledged(ctx):
    accept_all(
        ctx, [spec_example("client.rateLimit.reached"), spec_example("company.product.added")]
    )
    totals = drain(ctx)
    assert totals["ignored"] == 2
    counts = ctx.redis.hgetall(ctx.inbox.keys.ignored_counts)
    assert counts == {b"client.rateLimit.reached": b"1", b"company.product.added": b"1"}
    assert ctx.redis.xlen(ctx.inbox.keys.ignored_events) == 2
    assert ctx.inbox.backlog() == 0


def test_unknown_codat_values_are_stored_acknowledged_counted_and_logged_once(ctx, monkeypatch):
    import workers.jobs

    # Once per process: start from a process that has logged none, with a
    # logger bound inside capture_logs (one cached by an earlier test in this
    # process would write past it).
    monkeypatch.setattr(workers.jobs, "_UNKNOWN_LOGGED", set())
    monkeypatch.setattr(workers.jobs, "log", structlog.get_logger("workers.jobs"))
    life, _ = build("happy_path")
    events = copy.deepcopy(life.events)
    pending = events[1]["payload"]["connection"]
    pending["status"], pending["sourceType"] = "Suspended", "Telepathy"
    events[-1]["payload"]["dataTypes"][0]["status"] = "Throttled"
    repeated = copy.deepcopy(events[1])
    repeated["id"] = "7f1a2c3e-0000-4000-8000-000000000001"
    with structlog.testing.capture_logs() as logs:
        accept_all(ctx, [*events, repeated])
        totals = drain(ctx)
    assert totals["applied"] == len(events) + 1 and totals["rejected"] == 0
    assert ctx.inbox.backlog() == 0
    record = ctx.store.get(life.company_id)
    assert record.state == CompanyState.READY  # the other data type was read completely
    connection = record.facts.connections[0]
    stored = {d.data_type: d.status for d in connection.data_types}
    assert "Throttled" in stored.values()
    unknown = read_counters(ctx.redis, ctx.store.keys.prefix)["authflow_codat_unknown_values"]
    assert unknown[("connection_status",)] == 2 and unknown[("source_type",)] == 2
    assert unknown[("data_type_status",)] == 1 and unknown[("event_type",)] == 0
    logged = [(e["kind"], e["value"]) for e in logs if e["event"] == "codat.unknown_value"]
    assert sorted(logged) == [
        ("connection_status", "Suspended"),
        ("data_type_status", "Throttled"),
        ("source_type", "Telepathy"),
    ]


def test_an_entry_that_cannot_be_parsed_is_dead_lettered_not_retried_forever(ctx):
    ctx.inbox.accept("msg_bad", b"{not json", 0)
    life, _ = build("happy_path")
    accept_all(ctx, life.events)
    totals = drain(ctx)
    assert totals["rejected"] == 1 and totals["applied"] == len(life.events)
    [(_, fields)] = ctx.redis.xrange(ctx.inbox.keys.dead_letters)
    assert fields[b"webhook_id"] == b"msg_bad"
    assert b"not JSON" in fields[b"reason"]
    assert ctx.inbox.backlog() == 0


def test_entries_left_pending_by_a_dead_worker_are_claimed_and_applied(ctx):
    life, expected = build("happy_path")
    accept_all(ctx, life.events)
    # A worker reads the entries and dies before committing.
    assert len(ctx.inbox.read_new("dead-worker:1", 100)) == len(life.events)
    assert drain(ctx)["applied"] == 0  # still within the 1 s visibility timeout
    time.sleep(1.1)
    assert drain(ctx)["applied"] == len(life.events)
    assert ctx.store.get(life.company_id).state == CompanyState(expected)
    assert ctx.inbox.backlog() == 0


def test_a_company_whose_events_crash_the_state_machine_does_not_block_others(ctx, monkeypatch):
    poisoned, _ = build("happy_path")
    healthy, expected = build("happy_path")
    accept_all(ctx, poisoned.events, prefix="p")
    accept_all(ctx, healthy.events, prefix="h")
    import codat_authflow.company_updates as companies

    real = companies.apply_events

    def crash_for_poisoned(facts, events, *args, **kwargs):
        if facts.company_id == poisoned.company_id:
            raise RuntimeError("bug")
        return real(facts, events, *args, **kwargs)

    monkeypatch.setattr(companies, "apply_events", crash_for_poisoned)
    totals = drain(ctx)
    assert totals["failed"] == len(poisoned.events)
    assert ctx.store.get(healthy.company_id).state == CompanyState(expected)
    assert ctx.store.get(poisoned.company_id) is None
    assert ctx.inbox.backlog() == len(poisoned.events)  # kept for another try


def test_an_entry_delivered_too_often_goes_to_dead_letters(ctx):
    life, _ = build("happy_path")
    accept_all(ctx, life.events[:1])
    assert len(ctx.inbox.read_new("w1", 10)) == 1  # first delivery; w1 dies
    time.sleep(0.01)
    assert len(ctx.inbox.reclaim_abandoned("w2", min_idle_ms=0, max_deliveries=9, count=10)) == 1
    time.sleep(0.01)  # second delivery; w2 dies too
    entries = ctx.inbox.reclaim_abandoned("w3", min_idle_ms=0, max_deliveries=2, count=10)
    assert entries == []
    [(_, fields)] = ctx.redis.xrange(ctx.inbox.keys.dead_letters)
    assert b"after 2 deliveries" in fields[b"reason"]
    assert json.loads(fields[b"body"])["id"] == life.events[0]["id"]
    assert ctx.inbox.backlog() == 0


def test_the_event_log_rebuilds_the_stored_company(ctx):
    life, expected = build("failed_then_linked")
    accept_all(ctx, reversed(life.events))
    drain(ctx)
    logged = ctx.store.events(life.company_id)
    assert len(logged) == len(life.events)
    rebuilt = apply_events(CompanyFacts(company_id=life.company_id), [e for e, _ in logged])
    record = ctx.store.get(life.company_id)
    assert rebuilt.facts == record.facts
    assert rebuilt.state == record.state == CompanyState(expected)
    assert [t.to_state.value for t in rebuilt.transitions] == [h.to_state for h in record.history]
