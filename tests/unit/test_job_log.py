"""Our RQ worker class logs one JSON line per job and counts it."""

from __future__ import annotations

import fakeredis
import pytest
import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from rq import Queue, Retry

from codat_authflow.observability.metrics import read_counters
from codat_authflow.redis_wait import RedisUnavailable
from workers.worker import AuthflowWorker

log = structlog.get_logger("tests.job")


def works() -> str:
    log.info("inside.the.job")
    return "ok"


def fails() -> None:
    raise ValueError("nope")


def job_lines(logs) -> list[dict]:
    return logs.lines("authflow.job")


def test_each_job_leaves_one_line_with_outcome_duration_and_a_count(logs):
    redis = fakeredis.FakeRedis()
    queue = Queue("authflow", connection=redis)
    ok = queue.enqueue(works)
    bad = queue.enqueue(fails)
    retried = queue.enqueue(fails, retry=Retry(max=1))
    AuthflowWorker([queue], connection=redis).work(burst=True, with_scheduler=False)

    lines = {line["job_id"]: line for line in job_lines(logs)}
    assert lines[ok.id]["outcome"] == "finished" and lines[ok.id]["level"] == "info"
    assert lines[ok.id]["function"] == "tests.unit.test_job_log.works"
    assert lines[ok.id]["queue"] == "authflow"
    assert isinstance(lines[ok.id]["duration_ms"], float)
    assert lines[bad.id]["outcome"] == "failed" and lines[bad.id]["level"] == "error"
    # A job with retries left is handed back, then fails for good on its last try.
    assert [line["outcome"] for line in job_lines(logs) if line["job_id"] == retried.id] == [
        "retried",
        "failed",
    ]
    inside = logs.lines("tests.job")
    assert inside[0]["job_id"] == ok.id  # lines the job logs carry its id

    jobs = read_counters(redis, "authflow")["authflow_rq_jobs"]
    assert jobs[("tests.unit.test_job_log.works", "finished")] == 1
    assert jobs[("tests.unit.test_job_log.fails", "failed")] == 2
    assert jobs[("tests.unit.test_job_log.fails", "retried")] == 1


_server: fakeredis.FakeServer | None = None


def loses_redis() -> None:
    assert _server is not None
    _server.connected = False  # Redis goes away in the middle of the job
    raise RedisConnectionError("Connection refused")


def test_a_job_cut_off_by_a_redis_outage_is_logged_interrupted_and_left_to_rq(logs):
    global _server
    _server = fakeredis.FakeServer()
    redis = fakeredis.FakeRedis(server=_server)
    queue = Queue("authflow", connection=redis)
    job = queue.enqueue(loses_redis, retry=Retry(max=1))
    with pytest.raises((RedisError, RedisUnavailable)):  # work() ends; serve() waits, re-enters
        AuthflowWorker([queue], connection=redis).work(burst=True, with_scheduler=False)
    _server.connected = True

    [line] = [line for line in job_lines(logs) if line["job_id"] == job.id]
    assert line["outcome"] == "interrupted" and line["level"] == "warning"
    # Still "started" for RQ: its started-job registry hands it back (its Retry) later.
    assert queue.started_job_registry.get_job_ids(cleanup=False) == [job.id]
