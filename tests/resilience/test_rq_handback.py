"""How RQ hands back the jobs of a worker that died, as this project
configures it (workers/worker.py), shown on a real worker process and a
private Redis, deterministically (the soak shows it statistically).

1. A job running on a SIGKILLed worker is handed back (its `Retry`) within
   about job timeout + ABANDONED_GRACE_SECONDS + RQ_MAINTENANCE_INTERVAL_SECONDS,
   even by a dedicated pool whose queue is otherwise empty (before the fix in
   AuthflowWorker.dequeue_timeout, that worker slept 405 s in BLPOP first).
2. A job popped by a worker that dies before starting it: with one queue per
   worker, RQ pops with LMOVE into an "intermediate" list and a later
   maintenance run hands the job back; a worker listening to two queues pops
   with BLPOP and the job is in no list or registry at all: lost. Hence the
   recommendation of dedicated pools (docs/resilience.md).
3. A delivery job handed back within a minute of its worker's death finishes
   (before `result_ttl=60` in codat_authflow/jobs.py, RQ's own cleanup failed it).
"""

from __future__ import annotations

import time
import uuid

import pytest
import redis as redis_lib
from rq import Queue, Retry, Worker
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry

from tests.support.processes import start_rq_workers
from workers.worker import ABANDONED_GRACE_SECONDS, AuthflowWorker

pytestmark = [pytest.mark.resilience, pytest.mark.integration]

DELIVERIES = "authflow-deliveries"
JOB_TIMEOUT = 10
MAINTENANCE = 2


def wait_until(predicate, timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout:.0f}s")


def test_a_job_on_a_killed_worker_is_handed_back_by_an_idle_dedicated_pool(
    stack_env, redis_url, tmp_path
):
    env = {**stack_env, "RQ_MAINTENANCE_INTERVAL_SECONDS": str(MAINTENANCE)}
    conn = redis_lib.Redis.from_url(redis_url)
    queue = Queue(DELIVERIES, connection=conn)
    [victim] = start_rq_workers(env, 1, args=["--queues", "deliveries"], log_dir=tmp_path / "a")
    replacement = None
    try:
        wait_until(lambda: len(Worker.all(connection=conn)) == 1, 20, "worker registered")
        job = queue.enqueue(
            "tests.resilience.rq_jobs.sleep_once",
            f"marker-{uuid.uuid4().hex}",
            60,
            job_timeout=JOB_TIMEOUT,
            retry=Retry(max=2),  # no interval: requeued at once (no scheduler involved)
        )
        wait_until(lambda: job.get_status() == JobStatus.STARTED, 20, "job started")
        victim.kill()  # SIGKILL: RQ gets no chance to clean up
        killed_at = time.monotonic()
        [replacement] = start_rq_workers(
            env, 1, args=["--queues", "deliveries"], log_dir=tmp_path / "b"
        )
        wait_until(
            lambda: job.get_status() == JobStatus.FINISHED,
            JOB_TIMEOUT + ABANDONED_GRACE_SECONDS + 30,
            "job handed back and run again",
        )
        elapsed = time.monotonic() - killed_at
        job.refresh()
        assert job.return_value() == "ran again"
        assert job.retries_left == 1, "handed back through its Retry"
        assert elapsed < JOB_TIMEOUT + ABANDONED_GRACE_SECONDS + 3 * MAINTENANCE + 5, elapsed
        assert FailedJobRegistry(DELIVERIES, connection=conn).count == 0
        assert StartedJobRegistry(DELIVERIES, connection=conn).get_job_ids(cleanup=False) == []
    finally:
        victim.kill()
        if replacement is not None:
            replacement.stop()


def _popped_then_dead(conn, queue_names: list[str]) -> Job:
    """Enqueue a job on the last queue, let a worker of `queue_names` pop it
    the way RQ does, and "die" before starting it."""
    queues = [Queue(name, connection=conn) for name in queue_names]
    job = queues[-1].enqueue("tests.resilience.rq_jobs.sleep_once", "m", 0, retry=Retry(max=2))
    popped, _ = Queue.dequeue_any(queues, timeout=1, connection=conn)
    assert popped.id == job.id
    return job


def _held_anywhere(conn, job_id: str) -> bool:
    for key in conn.scan_iter("rq:*"):
        kind = conn.type(key)
        members = (
            conn.lrange(key, 0, -1)
            if kind == b"list"
            else conn.zrange(key, 0, -1)
            if kind == b"zset"
            else []
        )
        if any(m.decode().split(":", 1)[0] == job_id for m in members):
            return True
    return False


def test_a_job_popped_from_two_queues_by_a_dying_worker_is_lost(redis_url):
    conn = redis_lib.Redis.from_url(redis_url)
    job = _popped_then_dead(conn, ["authflow", DELIVERIES])  # python -m workers (both)
    assert job.get_status() == JobStatus.QUEUED
    assert not _held_anywhere(conn, job.id), "RQ kept a trace of it after all"
    worker = AuthflowWorker(
        [Queue("authflow", connection=conn), Queue(DELIVERIES, connection=conn)],
        connection=conn,
    )
    worker.clean_registries()  # what maintenance does: nothing finds it
    assert job.get_status() == JobStatus.QUEUED and not _held_anywhere(conn, job.id)


def test_a_job_popped_from_one_queue_by_a_dying_worker_is_handed_back(redis_url):
    conn = redis_lib.Redis.from_url(redis_url)
    job = _popped_then_dead(conn, [DELIVERIES])  # python -m workers --queues deliveries
    queue = Queue(DELIVERIES, connection=conn)
    assert queue.intermediate_queue.get_job_ids() == [job.id]
    worker = AuthflowWorker([queue], connection=conn)
    worker.clean_registries()  # first sighting: noted
    # A minute later (RQ's threshold), the next maintenance hands it back.
    conn.set(queue.intermediate_queue.get_first_seen_key(job.id), time.time() - 120)
    worker.clean_registries()
    job.refresh()
    assert job.get_status() == JobStatus.QUEUED and job.retries_left == 1
    assert queue.get_job_ids() == [job.id]


def test_a_delivery_job_handed_back_within_a_minute_finishes(redis_url, monkeypatch):
    """RQ keeps an execution's id in the job's execution registry 60 s longer
    than the execution record itself (which lives for the heartbeat TTL,
    job timeout + 5 s here). A delivery job handed back within that minute
    (after a worker died mid-finish, e.g. as Redis restarted) used to fail in
    RQ's own cleanup once its work was done: with result_ttl=0 RQ deletes the
    job and reads every execution listed, "Execution … not found in Redis".
    Each retry re-sent the notification and failed the same way."""
    from rq.executions import ExecutionRegistry

    from codat_authflow.jobs import enqueue_attempt as _enqueue_attempt
    from workers import context

    for name, value in {
        "REDIS_URL": redis_url,
        "API_TOKEN": "t",
        "CODAT_WEBHOOK_SECRETS": "whsec_" + "A" * 32,
    }.items():
        monkeypatch.setenv(name, value)
    context.current.cache_clear()
    try:
        conn = redis_lib.Redis.from_url(redis_url)
        queue = Queue(DELIVERIES, connection=conn)
        with conn.pipeline(transaction=True) as pipe:
            pipe.multi()
            _enqueue_attempt(queue, pipe, "dlv_" + "0" * 32, delay=0)  # the production path
            pipe.execute()
        [job_id] = queue.get_job_ids()
        # What the interrupted execution left: its id listed, its record expired.
        registry = ExecutionRegistry(job_id=job_id, connection=conn)
        conn.zadd(registry.key, {"execution-that-died": time.time() + 60})

        AuthflowWorker([queue], connection=conn).work(burst=True, logging_level="WARNING")

        assert FailedJobRegistry(DELIVERIES, connection=conn).get_job_ids(cleanup=False) == []
        assert queue.get_job_ids() == [] and conn.zcard(f"rq:scheduled:{DELIVERIES}") == 0
    finally:
        context.current.cache_clear()
