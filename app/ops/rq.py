"""The RQ dashboard (the `rq-dashboard` package), mounted at `/ops/rq` inside
this app: no separate process, the same authentication as the rest of `/ops`.

It shows our queues (the webhook drain on RQ_QUEUE, downstream deliveries on
RQ_DELIVERY_QUEUE), the workers, started/failed/scheduled jobs, and can
requeue failed jobs. Deleting jobs and emptying queues are switched off
(RQ_DASHBOARD_DISABLE_DELETE): a deleted delivery job would leave its
delivery pending forever; requeue, or the CLI, are the ways to act.

All of its assets (Bootstrap, jQuery) ship inside the package, so the page
works with no internet access; only the footer links point outside.
rq-dashboard 0.9 imports `six` without declaring it (pinned in pyproject).
"""

from __future__ import annotations

from contextlib import suppress

import rq_dashboard
import rq_dashboard.web
from flask import Flask, abort, current_app, request
from redis.exceptions import RedisError
from rq.job import Job

from codat_authflow.redis_client import describe
from codat_authflow.storage.rq_workers import prune_dead_workers

URL_PREFIX = "/ops/rq"


def mount_rq_dashboard(app: Flask) -> None:
    services = app.extensions["authflow"]
    app.config.update(
        RQ_DASHBOARD_REDIS_URL=[describe(services.settings)],  # shown only
        RQ_DASHBOARD_DISABLE_DELETE=True,
        RQ_DASHBOARD_POLL_INTERVAL=2500,
    )
    app.register_blueprint(rq_dashboard.blueprint, url_prefix=URL_PREFIX)
    # The dashboard reads `app.redis_conn`: the app's own connection (the one a
    # test may inject). Its own hook would build a new client from the URL on
    # every request (and swap it in under other threads' feet): dropped; the
    # URL above is only shown.
    app.redis_conn = services.redis
    hooks = app.before_request_funcs.setdefault(rq_dashboard.blueprint.name, [])
    hooks[:] = [hook for hook in hooks if hook is not rq_dashboard.web.push_rq_connection]
    hooks.append(_prune_dead_workers)
    hooks.append(_post_only_requeue_all)
    hooks.append(_requeue_known_jobs_only)


def _prune_dead_workers() -> None:
    """Workers that died without unregistering are not shown once their key
    expired (RQ_WORKER_TTL_SECONDS after their last heartbeat)."""
    services = current_app.extensions["authflow"]
    settings = services.settings
    with suppress(RedisError):  # the dashboard reports Redis itself
        prune_dead_workers(services.redis, (settings.queue_name, settings.delivery_queue_name))


def _post_only_requeue_all() -> None:
    requeue_all = f"{rq_dashboard.blueprint.name}.requeue_all"
    if request.endpoint == requeue_all and request.method != "POST":
        abort(405)  # it changes state; the dashboard itself POSTs


def _requeue_known_jobs_only() -> None:
    """Requeueing a job id RQ does not know is a 404 (the dashboard's own view
    lets RQ's NoSuchJobError through as a 500)."""
    if request.endpoint != f"{rq_dashboard.blueprint.name}.requeue_job_view":
        return
    job_id = (request.view_args or {}).get("job_id", "")
    if not Job.exists(job_id, connection=current_app.extensions["authflow"].redis):
        abort(404)
