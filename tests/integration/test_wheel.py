"""The wheel works on its own: built from the repository, installed with its
dependencies (pinned by requirements.lock) into an empty venv, served by that
venv's gunicorn from a directory outside the repository, against a private
Redis. The pages that need packaged files answer: `/ops/funnel` (templates),
`/api/docs` (Swagger UI from swagger-ui-bundle) and the API's document.

Everything it writes (sources copied for the build, the wheel, the venv,
pip's cache) is under pytest's tmp_path.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import httpx
import pytest

from tests.support.processes import (
    REPO_ROOT,
    TEST_API_TOKEN,
    app_env,
    free_port,
    start_process,
    wait_for_http,
)

pytestmark = pytest.mark.integration

# What the wheel is built from (pyproject's packages.find, and its readme).
SOURCES = ("pyproject.toml", "README.md", "app", "workers", "state_machine", "codat_authflow")
OPS_TOKEN = "wheel-ops-token"


def _run(argv: list[str], *, env: dict[str, str], cwd: Path, timeout: float) -> str:
    done = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{argv[:4]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    """A venv holding only the wheel and its locked dependencies; its bin dir."""
    src = tmp_path / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in SOURCES:
        path = REPO_ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV"))
    }
    env.update(PIP_CACHE_DIR=str(tmp_path / "pip-cache"), PIP_DISABLE_PIP_VERSION_CHECK="1")
    pip = [sys.executable, "-m", "pip"]
    _run([*pip, "wheel", str(src), "--no-deps", "-w", str(tmp_path / "dist")], env=env,
         cwd=tmp_path, timeout=90)  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("codat_authflow-*.whl")

    venv.create(tmp_path / "venv", with_pip=True, system_site_packages=False)
    bin_dir = tmp_path / "venv" / "bin"
    _run(
        [str(bin_dir / "python"), "-m", "pip", "install", "--quiet", "--constraint",
         str(REPO_ROOT / "requirements.lock"), str(wheel)],
        env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    return bin_dir


def test_the_wheel_serves_the_ops_and_docs_pages_from_outside_the_repo(
    installed: Path, redis_url: str, tmp_path: Path
):
    elsewhere = tmp_path / "run"
    elsewhere.mkdir()
    env = app_env(redis_url, OPS_TOKEN=OPS_TOKEN)
    env = {k: v for k, v in env.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # The app imported is the installed one, not the repository's.
    where = _run(
        [str(installed / "python"), "-c", "import app, swagger_ui_bundle; print(app.__file__)"],
        env=env, cwd=elsewhere, timeout=30,
    )  # fmt: skip
    assert str(installed.parent) in where and str(REPO_ROOT) not in where, where

    port = free_port()
    web = start_process(
        [str(installed / "gunicorn"), "--workers", "1", "--bind", f"127.0.0.1:{port}",
         "app:create_app()"],
        env, name="wheel-gunicorn", cwd=elsewhere, log_dir=tmp_path / "logs",
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(base + "/healthz", web, timeout=30)
        with httpx.Client(base_url=base, trust_env=False, timeout=10) as client:
            funnel = client.get("/ops/funnel", auth=("ops", OPS_TOKEN))
            assert funnel.status_code == 200, funnel.text[:500]
            assert "text/html" in funnel.headers["content-type"] and "<form" in funnel.text

            api = {"Authorization": f"Bearer {TEST_API_TOKEN}"}
            docs = client.get("/api/docs", headers=api)
            assert docs.status_code == 200, docs.text[:500]
            assert 'id="api-token"' in docs.text  # our template (app/templates) is packaged
            assets = re.findall(r'(?:src|href)="([^"]+)"', docs.text)
            assert assets and all(a.startswith("/api/docs/assets/") for a in assets), assets
            for asset in assets:
                assert client.get(asset, headers=api).status_code == 200, asset

            document = client.get("/api/openapi.json", headers=api)
            assert document.status_code == 200 and "/companies" in document.json()["paths"]

            # The connect pages' templates, static files and French catalogue are packaged.
            invalid = client.get("/connect/not-a-token", headers={"Accept-Language": "fr"})
            assert invalid.status_code == 404 and "est pas valide" in invalid.text
            assert client.get("/connect/static/connect.css").status_code == 200
    finally:
        web.stop()
