"""``scripts/flask ...``: the operator commands (``flask --app app ...``)
against the dev stack, from any terminal.

It loads ``var/stack.env``, which ``scripts/run-stack`` writes while it runs
(the stack's ``REDIS_URL``, wherever its Redis landed, its secrets and the
rest of its configuration); variables already set in the environment win.
Then it runs ``flask --app app`` with the arguments given:

    scripts/flask --help
    scripts/flask companies show COMPANY_ID
    scripts/flask deliveries list-dead
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from devtools.stack import STACK_ENV_FILE, parse_env_file, stack_pid


def environment(environ: dict[str, str], stack_env: Path = STACK_ENV_FILE) -> dict[str, str]:
    """``environ`` over the running stack's configuration (if there is one)."""
    env = dict(environ)
    if stack_env.exists():
        for name, value in parse_env_file(stack_env.read_text()).items():
            env.setdefault(name, value)
    return env


def _alive(pid: int | None) -> bool:
    if pid is None:
        return True  # unknown: do not warn
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(argv: list[str]) -> None:
    env = environment(dict(os.environ))
    if STACK_ENV_FILE.exists() and not _alive(stack_pid(STACK_ENV_FILE)):
        print(
            f"scripts/flask: warning: {STACK_ENV_FILE} is left from a run-stack that is not "
            "running any more; its Redis is probably gone too.",
            file=sys.stderr,
        )
    elif not STACK_ENV_FILE.exists() and not env.get("REDIS_URL"):
        print(
            f"scripts/flask: no {STACK_ENV_FILE}: is the dev stack running? Start it with "
            "scripts/run-stack (or set REDIS_URL, API_TOKEN and CODAT_WEBHOOK_SECRETS).",
            file=sys.stderr,
        )
    flask = Path(sys.executable).with_name("flask")
    os.execve(flask, [str(flask), "--app", "app", *argv], env)  # noqa: S606 (replaces us)


if __name__ == "__main__":
    main(sys.argv[1:])
