"""The inbox's hot path sends on a pooled connection without redis-py's client
layer (storage/raw_command.py). Against a real Redis: a connection Redis
dropped, a script Redis forgot and a Redis that went away must behave as they
did through the client, and threads share the pool."""

from __future__ import annotations

import threading

import pytest
import redis as redis_lib
from redis.exceptions import ConnectionError as RedisConnectionError

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


def test_threads_share_the_pool_and_its_connections_come_back(inbox, redis_url):
    admin = redis_lib.Redis.from_url(redis_url, client_name="test-admin")

    def accept_many(thread: int) -> None:
        for i in range(20):
            assert inbox.accept(f"msg_{thread}_{i}", b"{}", 0).queued

    threads = [threading.Thread(target=accept_many, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert admin.xlen("authflow:inbox") == 80
    pool = inbox.redis.connection_pool
    assert not pool._in_use_connections  # every connection handed back
    assert len(_ours(admin)) <= 4 + 1  # at most one per thread (+ the script's load)


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
