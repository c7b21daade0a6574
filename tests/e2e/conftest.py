"""Headless Chromium for the end-to-end tests: Debian's `chromium`, driven by
Playwright for Python with `executable_path` (never `playwright install`,
which downloads a browser build: not allowed, and not needed).

If no chromium is on the machine, the `chromium_path` fixture installs
Debian's package when it can (root, apt-get: `apt-get update` then
`apt-get install -y chromium`, about 25 s on a CI machine), and skips the
test only when that truly fails, saying why; set E2E_REQUIRE=1 to fail
instead, E2E_INSTALL_CHROMIUM=0 to never install. CHROMIUM may name the
binary. Screenshots go to `artifacts/e2e/` (gitignored), printed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import REPO_ROOT

ARTIFACTS = REPO_ROOT / "artifacts" / "e2e"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _find() -> str | None:
    configured = os.environ.get("CHROMIUM")
    if configured and Path(configured).exists():
        return configured
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _install() -> str:
    """Install Debian's chromium; returns what went wrong, or '' on success."""
    if os.environ.get("E2E_INSTALL_CHROMIUM", "1") == "0":
        return "E2E_INSTALL_CHROMIUM=0"
    if not shutil.which("apt-get"):
        return "no apt-get on this machine"
    if os.geteuid() != 0:
        return "not root, cannot apt-get install chromium (install it, or set CHROMIUM)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    started = time.monotonic()
    for argv, timeout in (
        (["apt-get", "update", "-qq"], 300),
        (["apt-get", "install", "-y", "-qq", "chromium"], 600),
    ):
        try:
            done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return f"{' '.join(argv)} did not finish within {timeout} s"
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).splitlines()[-5:])
            return f"{' '.join(argv)} failed ({done.returncode}): {tail}"
    print(f"e2e: installed Debian's chromium in {time.monotonic() - started:.0f} s")
    return ""


def _unavailable(reason: str) -> None:
    message = f"headless Chromium is not available: {reason}"
    if os.environ.get("E2E_REQUIRE") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = _find()
    if path is None:
        problem = _install()
        path = _find()
        if path is None:
            _unavailable(problem or "installed, yet no chromium binary was found")
    return path


@pytest.fixture(scope="session")
def browser(chromium_path: str) -> Iterator:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (scripts/bootstrap installs it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def screenshots(request: pytest.FixtureRequest) -> Iterator:
    """`shot(page, name)` saves artifacts/e2e/<test>-<name>.png and prints its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    taken: list[Path] = []

    def shot(page, name: str) -> Path:
        path = ARTIFACTS / f"{request.node.name}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        taken.append(path)
        print(f"screenshot: {path}")
        return path

    yield shot
