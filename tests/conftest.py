"""Shared fixtures.

Unit tests:
    fakeredis_server, fakeredis_conn   in-memory Redis, fresh per test.

Integration tests (real processes; helpers in tests/support/processes.py):
    redis_server           one private redis-server/valkey-server for the session,
                           on a free loopback port, nothing written to disk.
                           Never the machine's shared Redis on 6379.
    redis_url              its URL, FLUSHALLed before each test (it is private).
    redis_server_factory   more private servers for one test, e.g.
                           ``redis_server_factory(persistent=True)`` for
                           kill/restart fault tests; all closed at teardown.
    stack_env              environment for the app's processes.
    running_stack          gunicorn (2 workers) + 2 RQ workers on that env.

Session-scoped fixtures start lazily, so unit-only runs start no server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis

from tests.support.processes import Stack, app_env, start_stack
from tests.support.redis_server import RedisServer, start_redis_server

# -- unit tests ----------------------------------------------------------------


@pytest.fixture
def fakeredis_server() -> fakeredis.FakeServer:
    """A fresh fake server; connect more clients with ``FakeRedis(server=...)``."""
    return fakeredis.FakeServer()


@pytest.fixture
def fakeredis_conn(fakeredis_server: fakeredis.FakeServer) -> fakeredis.FakeRedis:
    """A bytes-in/bytes-out client (decode_responses=False, like production)."""
    return fakeredis.FakeRedis(server=fakeredis_server, decode_responses=False)


# -- a private Redis -------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One private, non-persistent server for the whole session."""
    with start_redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the session server with an empty keyspace (FLUSHALL first).

    A test that stopped or killed the server gets it back here, on the same URL.
    """
    if not redis_server.is_running():
        redis_server.start()
    with redis.Redis.from_url(redis_server.url) as conn:
        conn.flushall()
    return redis_server.url


@pytest.fixture
def redis_server_factory(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """``factory(**kwargs)`` -> a started private server (start_redis_server
    arguments; ``data_dir`` defaults to a fresh dir under tmp_path)."""
    servers: list[RedisServer] = []

    def factory(**kwargs: Any) -> RedisServer:
        kwargs.setdefault("data_dir", tmp_path / f"redis-{len(servers)}")
        server = start_redis_server(**kwargs)
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.close()


# -- the application's processes ------------------------------------------------


@pytest.fixture
def stack_env(redis_url: str) -> dict[str, str]:
    """os.environ (minus any app configuration or GUNICORN_CMD_ARGS from the
    developer's shell) plus a fixed production-like configuration."""
    return app_env(redis_url)


@pytest.fixture
def running_stack(stack_env: dict[str, str], tmp_path: Path) -> Iterator[Stack]:
    """gunicorn (2 workers) + 2 RQ workers; ``.base_url``, ``.env``, ``.web``,
    ``.workers``. Process logs are under ``.log_dir`` (printed, so a failing
    test's report shows where)."""
    stack = start_stack(stack_env, web_workers=2, rq_workers=2, log_dir=tmp_path / "processes")
    print(f"running_stack: {stack.base_url}, process logs in {stack.log_dir}")
    try:
        yield stack
    finally:
        stack.stop()
