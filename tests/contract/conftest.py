"""Contract-test fixtures: Codat's Platform API mocked by Stoplight Prism from
Codat's own OpenAPI document (tests/data/Codat-Platform.json).

Prism validates every request against the spec (a request that breaks it is
answered 4xx, and its `sl-violations` header says why) and answers with the
spec's examples. `Prefer: code=500`, `Prefer: example=<name>` or
`Prefer: dynamic=true` choose another documented answer; tests set them per
request through `codat_mock.prefer`.

    prism          one Prism process for the session (installed by
                   scripts/install-prism, run here if needed), on a free port
    codat_mock     per test: `.url`, `.prefer` (regex on "METHOD /path" ->
                   Prefer value), `.calls` (every request and response), and
                   `.http_client()`. At teardown it fails the test if any of
                   our requests broke Codat's spec.
    journey_app    a Flask app on fakeredis whose Codat client goes to Prism
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import fakeredis
import httpx
import pytest

from codat_authflow.journey.codat import build_http_client
from codat_authflow.journey.service import Journey
from tests.support.processes import REPO_ROOT, Process, ProcessError, free_port, start_process

SPEC = REPO_ROOT / "tests" / "data" / "Codat-Platform.json"
PRISM_BIN = REPO_ROOT / "tools" / "prism" / "node_modules" / ".bin" / "prism"
PRISM_READY_TIMEOUT = 60.0
TEST_CODAT_KEY = "test-codat-api-key"  # as Codat's portal shows a raw key
TEST_CODAT_AUTH = "Basic dGVzdC1jb2RhdC1hcGkta2V5"  # what Codat must receive for it

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Prism:
    url: str
    process: Process


def _install_prism() -> None:
    if shutil.which("node") is None:
        pytest.fail("node is not installed; the contract tests need Node.js 18.20+ for Prism")
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "install-prism")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"scripts/install-prism failed:\n{result.stderr[-3000:]}")


def _wait_until_listening(url: str, process: Process) -> None:
    deadline = time.monotonic() + PRISM_READY_TIMEOUT
    while time.monotonic() < deadline:
        if not process.is_running():
            raise ProcessError(f"prism exited with {process.returncode}\n{process.output_tail()}")
        try:
            with _NO_PROXY.open(url + "/integrations/gbol/branding", timeout=2):
                return
        except urllib.error.HTTPError:
            return  # 401 without credentials: Prism is answering
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise ProcessError(f"prism did not answer within {PRISM_READY_TIMEOUT:.0f}s\n"
                       f"{process.output_tail()}")  # fmt: skip


@pytest.fixture(scope="session")
def prism(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prism]:
    _install_prism()
    log_dir = tmp_path_factory.mktemp("prism")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    process = start_process(
        [str(PRISM_BIN), "mock", "--host", "127.0.0.1", "--port", str(port), str(SPEC)],
        env,
        name="prism",
        log_dir=log_dir,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_listening(url, process)
    except BaseException:
        process.kill()
        raise
    yield Prism(url, process)
    process.stop(5)


@dataclass
class Call:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    status: int | None = None
    violations: list[dict] = field(default_factory=list)

    def json(self):
        return json.loads(self.body) if self.body else None


@dataclass
class CodatMock:
    url: str
    prefer: dict[str, str] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)

    def _on_request(self, request: httpx.Request) -> None:
        target = f"{request.method} {request.url.path}"
        for pattern, value in self.prefer.items():
            if re.fullmatch(pattern, target):
                request.headers["Prefer"] = value
                break
        request.read()
        self.calls.append(
            Call(
                request.method,
                request.url.path,
                request.url.query.decode(),
                dict(request.headers),
                request.content,
            )
        )

    def _on_response(self, response: httpx.Response) -> None:
        call = self.calls[-1]
        call.status = response.status_code
        raw = response.headers.get("sl-violations")
        if raw:
            call.violations = json.loads(raw)

    def http_client(self, *, timeout: float = 10.0) -> httpx.Client:
        return build_http_client(
            connect_timeout=2,
            timeout=timeout,
            event_hooks={"request": [self._on_request], "response": [self._on_response]},
        )

    def calls_to(self, method: str, path_pattern: str) -> list[Call]:
        return [c for c in self.calls if c.method == method and re.fullmatch(path_pattern, c.path)]

    def request_violations(self) -> list[tuple[str, str, dict]]:
        return [
            (c.method, c.path, v)
            for c in self.calls
            for v in c.violations
            if v.get("location", [""])[0] == "request"
        ]


@pytest.fixture
def codat_mock(prism: Prism) -> Iterator[CodatMock]:
    mock = CodatMock(prism.url)
    yield mock
    assert mock.request_violations() == [], "our requests broke Codat's spec"


def journey_env(prism_url: str, **extra: str) -> dict[str, str]:
    return {
        "REDIS_URL": "redis://unused",
        "API_TOKEN": "s3cret-token",
        "CODAT_WEBHOOK_SECRETS": "whsec_dGVzdC1zZWNyZXQ=",
        "CODAT_API_KEY": TEST_CODAT_KEY,
        "CODAT_BASE_URL": prism_url,
        **extra,
    }


AUTH = {"Authorization": "Bearer s3cret-token"}


@pytest.fixture
def redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def journey_app(codat_mock: CodatMock, redis):
    """The Flask app on fakeredis, its Codat calls going to Prism through
    `codat_mock`. `app.extensions["journey"]` is the `Journey`."""
    from app import create_app

    app = create_app(journey_env(codat_mock.url), redis=redis)
    use_http_client(app, codat_mock.http_client())
    return app


def use_http_client(app, http_client: httpx.Client, **settings_overrides) -> Journey:
    services = app.extensions["authflow"]
    settings = services.settings
    if settings_overrides:
        settings = replace(settings, **settings_overrides)
    journey = Journey.build(settings, services.redis, services.store, http_client=http_client)
    app.extensions["journey"] = journey
    return journey
