"""Where the receiver's CPU goes, per webhook, without gunicorn and without noise.

``perf.receiver`` measures rates through gunicorn on a shared, noisy machine.
This one measures the app alone, in one process, in *instructions* (valgrind's
callgrind counts them, not seconds: the same code gives the same count
whatever else the machine is doing), against bare Flask measured the same
way, and then breaks the receiver's time down by part with cProfile.

Run from the repository root (valgrind must be installed; ~2 min)::

    python -m perf.receiver_cost
    python -m perf.receiver_cost --profile-only      # the breakdown alone, seconds

How: a private Redis (never the shared 6379); signed webhooks (the ``svix``
library, new ids, realistic bodies) pre-built as WSGI environs; each app is
called directly (``app(environ, start_response)``), every answer must be 202.
Instructions per webhook = (count for 300 webhooks - count for 100) / 200,
so start-up, imports and warm-up cancel out. The breakdown is cProfile's
cumulative time of the parts named in ``PARTS`` as a share of the request.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from perf.support import code_version, run_main
from tests.support.processes import REPO_ROOT, TEST_WEBHOOK_SECRET, app_env, start_redis

WARMUP, SMALL, LARGE = 100, 100, 300

#: Parts of a request, by the function whose cumulative time measures them.
PARTS = {
    "the whole request (WebhookReceiver)": "app/receiver.py:.*\\(__call__\\)",
    "  checks and store (_receive)": "app/receiver.py:.*\\(_receive\\)",
    "    body and content type": "app/receiver.py:.*\\(_read_body\\)",
    "    signature (svix)": "signature.py:.*\\(verify\\)",
    "    envelope and event (msgspec, parse_codat_event)": "app/receiver.py:.*\\(read_event\\)",
    "    store: the one Redis round trip (Inbox.accept)": "inbox.py:.*\\(accept\\)",
    "  request log line (log_request)": "request_log.py:.*\\(log_request\\)",
}


def environs(count: int) -> list[dict]:
    from werkzeug.test import EnvironBuilder

    from tests.support.lifecycles import Lifecycle
    from tests.support.signing import encode_body, signed_headers

    built = []
    for _ in range(count):
        body = encode_body(Lifecycle().company("company.created"))
        headers = {**signed_headers(TEST_WEBHOOK_SECRET, body), "Content-Type": "application/json"}
        built.append(
            EnvironBuilder(
                path="/webhooks/codat", method="POST", data=body, headers=headers
            ).get_environ()
        )
    return built


def load_app(kind: str, redis_url: str) -> Callable:
    if kind == "bare":
        from perf.bare_app import create_app as create_bare

        return create_bare()
    os.environ.update(app_env(redis_url, LOG_LEVEL="INFO"))
    from app import create_app

    return create_app()


def call_all(app: Callable, batch: list[dict]) -> None:
    def start_response(status: str, headers, exc_info=None) -> None:
        if not status.startswith("202"):
            raise RuntimeError(f"answered {status}, not 202")

    for environ in batch:
        for _ in app(environ, start_response):
            pass


def child(kind: str, redis_url: str, count: int) -> None:
    """What runs under callgrind: the same set-up whatever `count`, then `count` webhooks."""
    app = load_app(kind, redis_url)
    batch = environs(WARMUP + LARGE)
    sys.stdout.flush()
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # the request log lines
    call_all(app, batch[:WARMUP])
    call_all(app, batch[WARMUP : WARMUP + count])


def instructions(kind: str, redis_url: str, count: int) -> int:
    with tempfile.TemporaryDirectory() as out:
        run = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}/cg",
                sys.executable,
                "-m",
                "perf.receiver_cost",
                "--child",
                kind,
                redis_url,
                str(count),
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
    found = re.search(r"Collected : (\d+)", run.stderr)
    if run.returncode != 0 or not found:
        raise RuntimeError(f"callgrind run failed ({kind}, {count}):\n{run.stderr[-2000:]}")
    return int(found.group(1))


def per_webhook(kind: str, redis_url: str) -> int:
    small = instructions(kind, redis_url, SMALL)
    large = instructions(kind, redis_url, LARGE)
    return (large - small) // (LARGE - SMALL)


def breakdown(redis_url: str, count: int = 3000) -> list[tuple[str, float, float]]:
    app = load_app("receiver", redis_url)
    batch = environs(WARMUP + count)
    saved = os.dup(1)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    try:
        call_all(app, batch[:WARMUP])
        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
        call_all(app, batch[WARMUP:])
        profiler.disable()
    finally:
        os.dup2(saved, 1)
    stats = pstats.Stats(profiler).stats  # {(file, line, name): (cc, nc, tt, ct, callers)}
    whole = None
    rows = []
    for label, pattern in PARTS.items():
        regex = re.compile(pattern)
        seconds = sum(
            value[3]
            for (file, line, name), value in stats.items()
            if regex.search(f"{file}:{line}({name})")
        )
        whole = whole or seconds
        rows.append((label, seconds / count * 1e6, seconds / whole if whole else 0.0))
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(argv[1], argv[2], int(argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile-only", action="store_true", help="skip callgrind")
    args = parser.parse_args(argv)
    print(f"perf.receiver_cost at {code_version()}")
    server = start_redis()
    try:
        if not args.profile_only:
            if not shutil.which("valgrind"):
                raise RuntimeError("valgrind is not installed (apt-get install valgrind)")
            bare = per_webhook("bare", server.url)
            receiver = per_webhook("receiver", server.url)
            print(
                f"  instructions per webhook, in-process: receiver {receiver:,}, bare Flask "
                f"{bare:,} ({receiver / bare:.1f}x; the receiver's own work: "
                f"{receiver - bare:,})"
            )
        print(
            "  where the receiver's time goes (cProfile, process time per webhook, inflated"
            " several times by the profiler itself: read the shares; nested parts indented):"
        )
        for label, micros, share in breakdown(server.url):
            print(f"    {label:<52} {micros:7.0f} us  {share:5.0%}")
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    run_main(main)
