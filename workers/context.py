"""The services RQ jobs run with: built once per worker process by the one
bootstrap (`codat_authflow.bootstrap`), from the environment."""

from __future__ import annotations

from functools import cache

from codat_authflow.bootstrap import Services
from codat_authflow.settings import Settings


@cache
def current() -> Services:
    return Services.build(Settings.from_env())
