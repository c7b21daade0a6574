"""The operator commands (`flask --app app ...`) through Flask's CLI runner."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import fakeredis
import pytest
from rq import Queue

from app import create_app
from codat_authflow.company_updates import CompanyUpdates
from codat_authflow.storage.codec import decode_record, encode_record
from codat_authflow.storage.funnel import first_seen_key
from codat_authflow.storage.keys import Keys
from state_machine import CompanyState, parse_codat_event
from tests.support.lifecycles import build
from tests.unit.test_ops_web import ENV, failed_job


@pytest.fixture
def redis():
    return fakeredis.FakeRedis()


@pytest.fixture
def app(redis):
    return create_app({**ENV, "COMPANY_EVENT_LOG_LIMIT": "20"}, redis=redis)


def run(app, *args):
    return app.test_cli_runner().invoke(args=list(args), catch_exceptions=False)


def ingest(app, kind: str, at: datetime) -> str:
    life, _ = build(kind)
    store = app.extensions["authflow"].store
    for n, body in enumerate(life.events):
        stamp = (at + timedelta(seconds=n)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        CompanyUpdates(store).apply(
            {life.company_id: [parse_codat_event(body)]}, now=lambda s=stamp: s
        )
    return life.company_id


def tamper(redis, company_id: str, **changes) -> None:
    key = Keys().company(company_id)
    redis.set(key, encode_record(replace(decode_record(redis.get(key)), **changes)))


def test_show_prints_state_connections_and_history(app):
    company_id = ingest(app, "failed_then_linked", datetime.now(UTC))
    result = run(app, "companies", "show", company_id)
    assert result.exit_code == 0, result.output
    assert "state     ready" in result.output
    assert "connections (2):" in result.output and "Accounting" in result.output
    assert "linking -> linked  connection.connected" in result.output
    assert "event log: 7 events" in result.output
    as_json = json.loads(run(app, "companies", "show", company_id, "--json").output)
    assert as_json["state"] == "ready" and len(as_json["history"]) == 4


def test_show_an_unknown_company_is_an_error(app):
    result = run(app, "companies", "show", "nope")
    assert result.exit_code == 1
    assert "no company 'nope' is known" in result.output


def test_rebuild_of_an_intact_company_reports_no_difference(app):
    company_id = ingest(app, "reconnected", datetime.now(UTC))
    result = run(app, "companies", "rebuild", company_id)
    assert result.exit_code == 0, result.output
    assert "replayed 7 logged events: state ready (stored: ready)" in result.output
    assert "no difference" in result.output


def test_rebuild_reports_differences_and_can_write_the_replayed_state(app, redis):
    company_id = ingest(app, "happy_path", datetime.now(UTC))
    record = decode_record(redis.get(Keys().company(company_id)))
    # As if a bug had stored the wrong state and lost a data type's facts.
    (connection,) = [c for c in record.facts.connections if c.data_types]
    lost = connection.data_types[0].data_type
    damaged = replace(connection, data_types=connection.data_types[1:])
    others = tuple(c for c in record.facts.connections if c.id != connection.id)
    tamper(
        redis,
        company_id,
        state=CompanyState.SYNCING,
        facts=replace(record.facts, connections=(*others, damaged)),
    )
    redis.hincrby("authflow:stats:states", "ready", -1)
    redis.hincrby("authflow:stats:states", "syncing", 1)

    result = run(app, "companies", "rebuild", company_id)
    assert result.exit_code == 1
    assert "state: stored syncing, replayed ready" in result.output
    assert f"connection {connection.id} data type {lost}: only in the replayed" in result.output
    assert decode_record(redis.get(Keys().company(company_id))).state == CompanyState.SYNCING

    written = run(app, "companies", "rebuild", company_id, "--write")
    assert written.exit_code == 1 and "written: " in written.output
    fixed = decode_record(redis.get(Keys().company(company_id)))
    assert fixed.state == CompanyState.READY
    assert fixed.history[-1].event_type == "rebuild" and fixed.history[-1].synthetic
    assert redis.hget("authflow:stats:states", "ready") == b"1"
    assert redis.hget("authflow:stats:states", "syncing") == b"0"
    assert run(app, "companies", "rebuild", company_id).exit_code == 0


def test_rebuild_warns_about_a_full_log_and_write_then_needs_force(app, redis):
    company_id = ingest(app, "happy_path", datetime.now(UTC))
    store = app.extensions["authflow"].store
    store.event_log_limit = 5  # the log holds exactly its limit
    tamper(redis, company_id, state=CompanyState.LINKED)
    result = run(app, "companies", "rebuild", company_id, "--write")
    assert result.exit_code == 2
    assert "the event log is full" in result.output and "--force" in result.output
    forced = run(app, "companies", "rebuild", company_id, "--write", "--force")
    assert forced.exit_code == 1 and "written" in forced.output


def test_rebuild_of_an_unknown_company_exits_2(app):
    result = run(app, "companies", "rebuild", "nope")
    assert result.exit_code == 2 and "no company 'nope'" in result.output


def test_jobs_list_failed_and_requeue(app, redis):
    drain = failed_job(redis, "authflow")
    delivery = failed_job(redis, "authflow-deliveries")
    listed = run(app, "jobs", "list-failed")
    assert listed.exit_code == 0
    assert drain.id in listed.output and delivery.id in listed.output
    assert "RuntimeError: boom" in listed.output and "2 failed jobs" in listed.output
    only = run(app, "jobs", "list-failed", "--queue", "authflow-deliveries")
    assert drain.id not in only.output
    assert run(app, "jobs", "list-failed", "--queue", "other").exit_code == 2

    requeued = run(app, "jobs", "requeue", drain.id)
    assert requeued.exit_code == 0 and f"{drain.id}: requeued" in requeued.output
    assert Queue("authflow", connection=redis).job_ids == [drain.id]
    again = run(app, "jobs", "requeue", drain.id, "missing-job")
    assert again.exit_code == 1
    assert "not a failed job" in again.output and "no such job" in again.output
    everything = run(app, "jobs", "requeue", "--all")
    assert everything.exit_code == 0 and "requeued 1 of 1" in everything.output
    assert run(app, "jobs", "requeue").exit_code == 2  # neither ids nor --all


def test_history_purge_removes_only_old_entries(app, redis):
    old = ingest(app, "happy_path", datetime.now(UTC) - timedelta(days=40))
    new = ingest(app, "happy_path", datetime.now(UTC) - timedelta(days=1))
    redis.xadd("authflow:events:ignored", {"event_type": "x"}, id="1000-0")
    redis.xadd("authflow:events:ignored", {"event_type": "y"})

    dry = run(app, "history", "purge", "--older-than-days", "30", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "would remove" in dry.output
    assert "4 history entries and 5 event-log entries (1 of 2 companies), 1 ignored" in dry.output
    assert len(decode_record(redis.get(Keys().company(old))).history) == 4

    done = run(app, "history", "purge", "--older-than-days", "30")
    assert "removed" in done.output
    purged = decode_record(redis.get(Keys().company(old)))
    assert purged.history == () and purged.state == CompanyState.READY
    assert ctx_events(redis, old) == 0
    assert len(decode_record(redis.get(Keys().company(new))).history) == 4
    assert ctx_events(redis, new) == 5
    assert redis.xlen("authflow:events:ignored") == 1
    assert run(app, "history", "purge", "--older-than-days", "0").exit_code == 2


def test_funnel_commands(app, redis):
    company_id = ingest(app, "happy_path", datetime.now(UTC) - timedelta(hours=1))
    shown = json.loads(run(app, "funnel", "show").output)
    assert [s["companies"] for s in shown["steps"]] == [1, 1, 1, 1]
    redis.delete(first_seen_key(Keys()))
    assert "indexed 1 companies" in run(app, "funnel", "rebuild-index").output
    assert redis.zscore(first_seen_key(Keys()), company_id) is not None
    assert run(app, "funnel", "show", "--from", "tomorrow").exit_code == 2


def ctx_events(redis, company_id):
    """How many events the company's stored document logs."""
    from codat_authflow.storage.codec import decode_record

    return len(decode_record(redis.get(Keys().company(company_id))).events)
