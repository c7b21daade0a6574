"""The first hour of a new user (issue 13) through real processes:
configuration problems at start, the CLI without a configuration, the demo.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devtools.stack import CONFIG_VARIABLES
from tests.support.processes import (
    REPO_ROOT,
    TEST_API_TOKEN,
    TEST_WEBHOOK_SECRET,
    free_port,
)

PYTHON = sys.executable


def clean_env(**overrides: str) -> dict[str, str]:
    """os.environ without any app configuration from the developer's shell."""
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_VARIABLES}
    env.pop("FLASK_APP", None)
    env.update(overrides)
    return env


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


# -- configuration problems at start ----------------------------------------------------


GUNICORN = [PYTHON, "-m", "gunicorn", "--config", "python:app.gunicorn_conf", "--bind"]
BAD_SECRET = clean_env(
    REDIS_URL="redis://127.0.0.1:9/0", API_TOKEN="t", CODAT_WEBHOOK_SECRETS="whsec_!!!"
)


@pytest.mark.parametrize(
    ("argv", "program"),
    [
        ([PYTHON, "-m", "workers"], "worker"),
        ([PYTHON, "-m", "workers.clock"], "clock"),
        ([*GUNICORN, "127.0.0.1:0", "app:create_app()"], "web"),
    ],
)
def test_a_process_with_a_bad_value_prints_one_line_and_no_traceback(argv, program):
    result = subprocess.run(
        argv, env=BAD_SECRET, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"{program}: CODAT_WEBHOOK_SECRETS: entry 1 ('whsec_!!!') is not valid base64"
    ]
    assert result.stdout == ""


# -- the CLI and the demo without a stack ------------------------------------------------


def test_flask_help_without_configuration_has_no_traceback():
    result = subprocess.run(
        [str(Path(PYTHON).with_name("flask")), "--app", "app", "--help"],
        env=clean_env(),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert "Traceback" not in result.stdout + result.stderr
    assert "deliveries" in result.stdout and "companies" in result.stdout


def demo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "devtools.demo", *args],
        env=env or clean_env(CODAT_WEBHOOK_SECRETS=TEST_WEBHOOK_SECRET, API_TOKEN=TEST_API_TOKEN),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_demo_gives_plain_errors_and_a_full_help():
    help_text = demo("--help").stdout
    assert "Exit status: 0 when the company reached the expected state" in help_text
    assert "happy_path" in help_text and "revoked_after_ready" in help_text

    unknown = demo("--lifecycle", "nope")
    assert unknown.returncode == 2
    assert "invalid choice: 'nope'" in unknown.stderr and "Traceback" not in unknown.stderr

    down = demo("--base-url", f"http://127.0.0.1:{free_port()}")
    assert down.returncode == 1
    assert "Traceback" not in down.stderr
    assert down.stderr.strip().splitlines()[-1].startswith("demo: nothing answers at http://")
