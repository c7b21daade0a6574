"""The house rules that tools check, run with the unit tests so CI enforces them:
the import contracts (`[tool.importlinter]` in pyproject.toml: the domain
imports nothing of ours, adapters never import the entrypoints, app and
workers are independent, no cycles), the types of the domain and the storage
adapters (`[tool.mypy]`), and ruff with its complexity limit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    "command",
    [
        ["lint-imports", "--no-cache"],
        ["mypy", "--no-incremental"],
        ["ruff", "check", "--no-cache", "."],
    ],
    ids=["import contracts", "types", "ruff"],
)
def test_the_tree_keeps_the_house_rules(command):
    result = subprocess.run(
        [str(BIN / command[0]), *command[1:]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
