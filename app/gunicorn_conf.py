"""Gunicorn's settings for the web tier, in one place: the Procfile,
`scripts/run-stack` (through the Procfile), the tests' `start_gunicorn` and
the benchmarks all run ``gunicorn --config python:app.gunicorn_conf``.

Worker model (issue 12, defect 3): sync workers serve one connection at a
time, so two clients that announce a body and go quiet stalled the web tier.
`gthread` keeps idle and keep-alive connections in a poller and runs
requests on a pool of threads; a request whose body stops arriving holds one
thread for at most BODY_READ_TIMEOUT seconds (the socket timeout set in
`pre_request`, which bounds every read of the body), then the connection is
closed. Put a buffering proxy in front as well if many slow clients are
expected: threads per worker bound how many can wait at once.

Command-line options and GUNICORN_CMD_ARGS still override these.
"""

from __future__ import annotations

import os

from codat_authflow.settings import settings_or_exit

# Before gunicorn binds or forks: every configuration problem on its own line
# (`web: VARIABLE: ...`), exit status 2, no traceback and no worker boot loop.
settings_or_exit("web")

worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
#: Threads per worker: the slow or idle requests one worker can hold while still answering.
threads = int(os.environ.get("GUNICORN_THREADS", "64"))
#: Seconds a worker may be silent before the arbiter restarts it.
timeout = 30
graceful_timeout = 20
keepalive = 5  # seconds an idle keep-alive connection is kept
#: gunicorn 27's control socket lives at one path per user ($HOME/.gunicorn/gunicorn.ctl):
#: every gunicorn on a host (tests, benchmarks, a second stack) would take it over
#: from the others. Nothing here uses it.
control_socket_disable = True
#: Seconds one read of a request body may wait for data (a quiet client lets go).
BODY_READ_TIMEOUT = float(os.environ.get("GUNICORN_BODY_READ_TIMEOUT", "5"))


def pre_request(worker, req):
    """Bound each read of the body: gthread's sockets are blocking with no timeout."""
    sock = getattr(getattr(req, "unreader", None), "sock", None)
    if sock is not None and hasattr(sock, "settimeout"):
        sock.settimeout(BODY_READ_TIMEOUT)
