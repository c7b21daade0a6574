"""The inbox's hot path sends on a connection of each thread's own, without
redis-py's client layer or pool (storage/raw_command.py). Against a real
Redis: a connection Redis dropped, a script Redis forgot and a Redis that went
away must behave as they did through the client, and a thread keeps one
connection, closed when the thread is gone."""

from __future__ import annotations

import gc
import os
import signal
import threading
import time

import pytest
import redis as redis_lib
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from codat_authflow.redis_client import connect
from codat_authflow.settings import Settings
from codat_authflow.storage.inbox import Inbox
from codat_authflow.storage.keys import Keys
from tests.support.processes import TEST_WEBHOOK_SECRET, app_env


@pytest.fixture
def inbox(redis_url):
    settings = Settings.from_env(app_env(redis_url, CODAT_WEBHOOK_SECRETS=TEST_WEBHOOK_SECRET))
    client = connect(settings)  # production's options: timeouts, health checks, retries
    yield Inbox(client, Keys("authflow"))
    client.close()


def _ours(conn) -> list[dict]:
    return [c for c in conn.client_list() if c.get("name") != "test-admin"]


def test_each_thread_keeps_one_connection_and_a_finished_thread_closes_it(inbox, redis_url):
    admin = redis_lib.Redis.from_url(redis_url, client_name="test-admin")
    assert inbox.accept("msg_main", b"{}", 0).queued  # the script is loaded; main's connection
    before = _addresses(admin)  # others may close meanwhile (earlier tests' clients): by address
    all_sent = threading.Barrier(5)
    checked = threading.Event()

    def accept_many(thread: int) -> None:
        for i in range(20):
            assert inbox.accept(f"msg_{thread}_{i}", b"{}", 0).queued
        all_sent.wait(10)
        checked.wait(10)

    threads = [threading.Thread(target=accept_many, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    all_sent.wait(10)
    try:
        theirs = _addresses(admin) - before
        assert len(theirs) == 4  # 20 commands each, one connection each
    finally:
        checked.set()
        for t in threads:
            t.join()
    gc.collect()
    deadline = time.monotonic() + 5  # Redis sees each close on its next event loop turn
    while _addresses(admin) & theirs and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _addresses(admin) & theirs  # gone with their threads
    assert admin.xlen("authflow:inbox") == 81


def _addresses(admin) -> set[str]:
    return {client["addr"] for client in _ours(admin)}


def test_a_connection_redis_dropped_is_reopened_and_the_webhook_stored(inbox, redis_url):
    admin = redis_lib.Redis.from_url(redis_url, client_name="test-admin")
    assert inbox.accept("msg_first", b"{}", 0).queued
    killed = admin.client_kill_filter(_type="normal", skipme=True)
    assert killed >= 1
    assert inbox.accept("msg_after_kill", b"{}", 0).queued  # the connection's retry reconnects
    assert admin.xlen("authflow:inbox") == 2


def test_a_script_redis_forgot_is_loaded_again(inbox, redis_url):
    admin = redis_lib.Redis.from_url(redis_url)
    assert inbox.accept("msg_1", b"{}", 0).queued
    admin.script_flush()  # as after a restart without persistence of scripts
    assert inbox.accept("msg_2", b"{}", 0).queued
    assert not inbox.accept("msg_2", b"{}", 0).queued  # still deduplicated
    assert admin.xlen("authflow:inbox") == 2


def test_a_redis_that_is_gone_raises_connection_error(inbox, redis_server, redis_url):
    assert inbox.accept("msg_1", b"{}", 0).queued
    redis_server.stop()
    try:
        with pytest.raises(RedisConnectionError):  # the receiver answers 503 on it
            inbox.accept("msg_2", b"{}", 0)
    finally:
        redis_server.start()
    assert inbox.accept("msg_3", b"{}", 0).queued  # and carries on once it is back


def test_a_redis_that_stops_answering_fails_the_command_within_the_timeout_once(
    redis_server, redis_url
):
    """The socket timeout is kept by the kernel on the hot path: a Redis that
    hangs (SIGSTOP) fails the command after `socket_timeout`, and a timeout is
    not sent again (that would double the wait before the 503)."""
    client = redis_lib.Redis.from_url(redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
    inbox = Inbox(client, Keys("authflow"))
    assert inbox.accept("msg_1", b"{}", 0).queued  # the connection exists and has served
    os.kill(redis_server.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises((RedisConnectionError, RedisTimeoutError)):  # both: a 503
            inbox.accept("msg_2", b"{}", 0)
        waited = time.monotonic() - started
    finally:
        os.kill(redis_server.pid, signal.SIGCONT)
    assert 0.9 <= waited < 1.9  # one timeout, not two (a second would end at 2.0 s or later)
    assert inbox.accept("msg_3", b"{}", 0).queued  # a new connection once Redis answers
    client.close()
