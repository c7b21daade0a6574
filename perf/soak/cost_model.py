"""`python -m perf.soak --cost-model`: Redis commands per unit of work, each
measured alone (docs/scaling.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis as redis_lib
from rq import Queue

from perf.soak.config import stack_environment
from perf.soak.measure import CPU_MS, commandstats, deliveries_of
from tests.support.lifecycles import build
from tests.support.processes import (
    TEST_WEBHOOK_SECRET,
    start_redis,
)
from tests.support.signing import encode_body, signed_headers
from tests.support.subscriber import Subscriber


def cost_model(batch_sizes: Sequence[int] = (1, 10, 50, 200)) -> dict[str, Any]:
    """Redis commands per unit of work, each measured alone, in-process, on a
    private Redis (INFO commandstats deltas): the receiver's accept and
    duplicate, a drain per inbox entry by batch size, an RQ job's own
    overhead, a relay per notification (into the delivery schedule) and a
    delivery sent by the pump, per delivery. The soak's totals are these,
    mixed by the traffic (docs/scaling.md)."""
    from app import create_app
    from codat_authflow.bootstrap import Services
    from codat_authflow.delivery.pump import run_pump
    from codat_authflow.delivery.sender import make_client
    from codat_authflow.settings import Settings
    from workers.jobs import drain
    from workers.worker import AuthflowWorker

    server = start_redis()
    subscriber = Subscriber()
    try:
        conn = redis_lib.Redis.from_url(server.url)
        env = stack_environment(server.url)
        settings = Settings.from_env(env)

        def delta(action) -> int:
            before = commandstats(conn)
            action()
            after = commandstats(conn) - before
            after.pop("info", None)
            after.pop(CPU_MS, None)
            return sum(after.values())

        def fresh() -> Services:
            conn.flushall()
            ctx = Services.build(settings, conn)
            ctx.inbox.ensure_group()
            ctx.store.outbox.ensure_group()
            return ctx

        app = create_app(env)
        client = app.test_client()
        bodies = [encode_body(b) for _ in range(40) for b in build("happy_path")[0].events]

        def post(raw: bytes, webhook_id: str) -> int:
            headers = signed_headers(TEST_WEBHOOK_SECRET, raw, webhook_id=webhook_id)
            return client.post("/webhooks/codat", data=raw, headers=headers).status_code

        fresh()
        post(bodies[0], "msg_warm")  # first one also queues a drain job
        ids = [f"msg_cost_{i}" for i in range(len(bodies))]
        figures: dict[str, Any] = {}
        figures["receiver_accept_per_post"] = round(
            delta(lambda: [post(b, i) for b, i in zip(bodies, ids, strict=True)]) / len(bodies), 1
        )
        figures["receiver_duplicate_per_post"] = round(
            delta(lambda: [post(b, i) for b, i in zip(bodies, ids, strict=True)]) / len(bodies), 1
        )
        queue = Queue(settings.queue_name, connection=conn)
        figures["rq_enqueue_drain"] = delta(
            lambda: queue.enqueue("workers.scheduling.sweep", job_timeout=10)
        )

        # Drain cost per entry, by batch size, without and with a "*" subscription.
        for with_subscription in (False, True):
            per_entry = {}
            for size in batch_sizes:
                ctx = fresh()
                if with_subscription:
                    ctx.subscriptions.create(subscriber.url, ["*"], "cost")
                for i, raw in enumerate(bodies[:size]):
                    ctx.inbox.accept(f"m{i}", raw, 0)
                per_entry[size] = round(delta(lambda ctx=ctx: drain(ctx)) / size, 1)
            name = "drain_and_relay_per_entry" if with_subscription else "drain_per_entry"
            figures[name] = per_entry
        deliveries = deliveries_of(conn)
        figures["deliveries_per_entry_at_200"] = round(len(deliveries) / max(batch_sizes), 2)

        # Deliveries that succeed, sent by one pump (its own work, not RQ's):
        # the schedule holds every delivery the drains above created.
        ctx = Services.build(settings, conn)
        subscription = ctx.subscriptions.all()[0]
        subscriber.set(secret=subscription.secrets[0].secret)
        http = make_client()
        sent = {}
        cost = delta(lambda: sent.update(run_pump(ctx, http)))
        figures["delivery_by_pump_per_delivery"] = round(cost / max(1, sent.get("delivered", 0)), 1)
        figures["pump_deliveries"] = sent.get("delivered", 0)

        # RQ's own overhead per job: enqueue + dequeue + run + finish a no-op.
        conn.flushall()
        noop = Queue("cost-noop", connection=conn)

        def run_jobs(count: int, result_ttl: int) -> None:
            for _ in range(count):
                noop.enqueue(len, "x", result_ttl=result_ttl)  # a job doing nothing in Redis
            AuthflowWorker([noop], connection=conn).work(burst=True, logging_level="WARNING")

        empty = delta(lambda: run_jobs(0, 0))
        for result_ttl, name in ((0, "rq_job_overhead"), (60, "rq_job_overhead_result_kept")):
            figures[name] = round((delta(lambda t=result_ttl: run_jobs(50, t)) - empty) / 50, 1)
        return figures
    finally:
        subscriber.stop()
        server.close()
