"""`flask --app app jobs list-failed|requeue`: RQ jobs that failed.

A failed drain job loses nothing (its inbox entries are reclaimed by the next
drain), so requeueing it only brings the work forward; a failed delivery job
leaves its delivery pending until requeued. Exit status 1 if a job given by
id cannot be requeued.
"""

from __future__ import annotations

import click
from flask import current_app
from rq import Queue, requeue_job
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job

from app.commands.groups import OpsGroup
from codat_authflow.bootstrap import Services


def _context() -> Services:
    return current_app.extensions["authflow"]


def _queue_names(queue: str | None) -> list[str]:
    settings = _context().settings
    ours = [settings.queue_name, settings.delivery_queue_name]
    if queue is None:
        return ours
    if queue not in ours:
        raise click.BadParameter(f"use one of {', '.join(ours)}", param_hint="--queue")
    return [queue]


def _failed(queue: str | None) -> list[tuple[str, str]]:
    redis = _context().redis
    return [
        (name, job_id)
        for name in _queue_names(queue)
        for job_id in Queue(name, connection=redis).failed_job_registry.get_job_ids(cleanup=False)
    ]


def _last_line(text: str | None) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1].strip()[:200] if lines else "-"


@click.group(cls=OpsGroup)
def jobs() -> None:
    """RQ jobs that failed: list and requeue."""


@jobs.command("list-failed")
@click.option("--queue", help="Only this queue (RQ_QUEUE or RQ_DELIVERY_QUEUE).")
def list_failed(queue: str | None) -> None:
    """List failed jobs, newest last, with their last error line."""
    redis = _context().redis
    failed = _failed(queue)
    for name, job_id in failed:
        try:
            job = Job.fetch(job_id, connection=redis)
        except NoSuchJobError:
            click.echo(f"{job_id} queue={name} (expired)")
            continue
        result = job.latest_result()
        ended = job.ended_at.strftime("%Y-%m-%dT%H:%M:%SZ") if job.ended_at else "-"
        click.echo(
            f"{job_id} queue={name} ended={ended} {job.description or job.func_name} "
            f"error={_last_line(result.exc_string if result else None)}"
        )
    click.echo(f"{len(failed)} failed jobs")


@jobs.command("requeue")
@click.argument("job_ids", nargs=-1)
@click.option("--all", "all_failed", is_flag=True, help="Every failed job (of --queue).")
@click.option("--queue", help="With --all: only this queue.")
def requeue(job_ids: tuple[str, ...], all_failed: bool, queue: str | None) -> None:
    """Put failed jobs back on their queue."""
    if bool(job_ids) == all_failed:
        raise click.UsageError("give job ids, or --all")
    redis = _context().redis
    ids = [job_id for _, job_id in _failed(queue)] if all_failed else list(job_ids)
    problems = 0
    for job_id in ids:
        try:
            requeue_job(job_id, connection=redis)
        except NoSuchJobError:
            problems += 1
            click.echo(f"{job_id}: no such job (expired?)", err=True)
        except InvalidJobOperation:
            problems += 1
            click.echo(f"{job_id}: not a failed job; only failed jobs can be requeued", err=True)
        else:
            click.echo(f"{job_id}: requeued")
    click.echo(f"requeued {len(ids) - problems} of {len(ids)} jobs")
    if problems:
        raise SystemExit(1)
