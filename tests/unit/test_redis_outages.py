"""Riding out Redis outages (codat_authflow/redis_wait.py), our RQ worker's
heartbeat and registration (workers/worker.py), and the ghost-free worker
count (codat_authflow/storage/rq_workers.py), in-process. The real processes
through a restart, a 60 s outage and a Sentinel failover are in
tests/resilience/test_redis_failover.py."""

from __future__ import annotations

import logging
import threading

import pytest
import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from rq import Queue, Worker

from codat_authflow.redis_wait import (
    MAX_DELAY_SECONDS,
    RedisUnavailable,
    RedisWatch,
    _QuietOutages,
    backoff,
    wait_for_redis,
)
from codat_authflow.storage.rq_workers import prune_dead_workers
from workers.worker import AuthflowWorker


class FlakyRedis:
    def __init__(self, failures: int):
        self.failures = failures
        self.pings = 0

    def ping(self):
        self.pings += 1
        if self.pings <= self.failures:
            raise RedisConnectionError("Connection refused")
        return True


def test_waiting_logs_one_line_when_redis_goes_and_one_when_it_is_back(monkeypatch):
    monkeypatch.setattr("codat_authflow.redis_wait.backoff", lambda attempt: 0)
    watch = RedisWatch("worker")
    with structlog.testing.capture_logs() as lines:
        assert wait_for_redis(FlakyRedis(failures=7), watch)
        assert wait_for_redis(FlakyRedis(failures=0), watch)
    assert [line["event"] for line in lines] == ["redis.unavailable", "redis.available"]
    assert lines[0]["process"] == "worker" and "Connection refused" in lines[0]["error"]


def test_waiting_ends_when_the_process_is_asked_to_stop():
    stop = threading.Event()
    stop.set()
    assert wait_for_redis(FlakyRedis(failures=10**6), RedisWatch("clock"), stop) is False


def test_backoff_is_capped_and_jittered():
    delays = [backoff(n) for n in range(12)]
    assert delays[0] <= 0.25 and all(0 < d <= MAX_DELAY_SECONDS for d in delays)
    assert min(backoff(20) for _ in range(50)) >= MAX_DELAY_SECONDS / 2


def test_rq_lines_about_an_outage_are_dropped_others_kept():
    quiet = _QuietOutages()

    def record(message, exc=None):
        info = (type(exc), exc, None) if exc else None
        return logging.LogRecord("rq.worker", logging.ERROR, "", 0, message, (), info)

    assert not quiet.filter(record("Worker w: could not connect to Redis instance: x retrying"))
    assert not quiet.filter(record("found an unhandled exception", RedisUnavailable("gone")))
    assert not quiet.filter(record("quitting", RedisConnectionError("refused")))
    assert quiet.filter(record("found an unhandled exception", ValueError("a bug")))


def _worker(conn, ttl=45) -> AuthflowWorker:
    return AuthflowWorker([Queue("authflow", connection=conn)], connection=conn, worker_ttl=ttl)


def test_a_heartbeat_keeps_the_key_for_the_worker_ttl_and_re_registers_a_lost_worker(
    fakeredis_conn,
):
    worker = _worker(fakeredis_conn, ttl=45)
    worker.register_birth()
    worker.heartbeat()
    assert 40 < fakeredis_conn.ttl(worker.key) <= 45  # not RQ's worker_ttl + 60
    fakeredis_conn.flushall()  # Redis lost its data (or the key expired during an outage)
    worker.heartbeat()
    assert [w.name for w in Worker.all(connection=fakeredis_conn)] == [worker.name]
    assert fakeredis_conn.hget(worker.key, "queues") == b"authflow"


def test_a_heartbeat_without_redis_raises_redis_unavailable(fakeredis_server, fakeredis_conn):
    worker = _worker(fakeredis_conn)
    worker.register_birth()
    fakeredis_server.connected = False
    with pytest.raises(RedisUnavailable):
        worker.heartbeat()


def test_dead_workers_leave_the_registry_and_the_count_once_their_key_expired(fakeredis_conn):
    alive, dead = _worker(fakeredis_conn), _worker(fakeredis_conn)
    alive.register_birth()
    dead.register_birth()
    assert Worker.count(connection=fakeredis_conn) == 2
    fakeredis_conn.delete(dead.key)  # what its TTL does once its heartbeats stop
    assert Worker.count(connection=fakeredis_conn) == 2  # RQ's count still sees the ghost
    assert prune_dead_workers(fakeredis_conn, ["authflow"]) == 1
    assert Worker.count(connection=fakeredis_conn) == 1
    assert fakeredis_conn.smembers("rq:workers:authflow") == {alive.key.encode()}
