"""Every benchmark under perf/ still starts: `python -m perf.X --help` exits 0
in an environment without the app's configuration (a benchmark that imports
something validating the configuration at import, as `app.gunicorn_conf`
does, broke that once)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.processes import REPO_ROOT

HELPERS = ("__init__", "support", "loadgen", "bare_app", "noop", "receiver_variants")  # not scripts
SCRIPTS = [
    *sorted(p.stem for p in (REPO_ROOT / "perf").glob("*.py") if p.stem not in HELPERS),
    "soak",
]


@pytest.mark.parametrize("script", SCRIPTS)
def test_each_benchmark_starts(script):
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "API_TOKEN")}
    env.pop("CODAT_WEBHOOK_SECRETS", None)
    run = subprocess.run(
        [sys.executable, "-m", f"perf.{script}", "--help"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "usage:" in run.stdout
