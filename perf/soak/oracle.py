"""The oracle: every company equals the pure state machine applied to its
events, each webhook accepted and applied exactly once, nothing left
unprocessed, no job lost (`Oracle.verify`)."""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter, defaultdict

import httpx
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.registry import FailedJobRegistry, StartedJobRegistry

from codat_authflow.storage.companies import CompanyStore
from codat_authflow.storage.keys import Keys
from perf.soak.config import AUTH, CRON_FUNCTIONS, DELIVERY_QUEUE, PREFIX, QUEUE
from perf.soak.plan import Plan
from perf.soak.stack import Stack
from perf.soak.traffic import PostOutcome
from state_machine import CompanyFacts, apply_events, parse_codat_event
from tests.support.subscriber import Subscriber


class Oracle:
    """Part of `SoakRun` (perf/soak/run.py): the invariants, checked once the
    system is quiet. Each breach is a line in `violations`; what a Redis crash
    excuses is a line in `findings`."""

    def _account_for_crash(self, plan: Plan) -> None:
        """After Redis crashes: the acknowledged webhooks it lost. A dedupe key
        that is missing, or younger than the crash (a later duplicate from
        "Codat" was accepted as new), marks one. Those never brought back are
        left out of the oracle (a deployment relies on reconciliation for
        them) and reported."""
        ttl = 72 * 3600  # WEBHOOK_DEDUPE_TTL_SECONDS, the soak does not change it
        for killed_at, back_at in self.crashes:
            acked = sorted(
                {o.webhook_id for o in self.poster.outcomes if o.acked_at and o.acked_at <= back_at}
            )
            with self.conn.pipeline(transaction=False) as pipe:
                for webhook_id in acked:
                    pipe.pttl(f"{PREFIX}:seen:{webhook_id}")
                remaining = pipe.execute()
            now = time.time()
            for webhook_id, pttl in zip(acked, remaining, strict=True):
                if pttl < 0 or now - (ttl - pttl / 1000) > killed_at:
                    self.lost_in_crash.add(webhook_id)
        lost = self.lost_in_crash
        healed = {w for w in lost if self.conn.exists(f"{PREFIX}:seen:{w}")}
        self.lost_for_good = lost - healed
        self.figures["crash"] = {
            "aof_bytes_cut": self.aof_bytes_lost,
            "acknowledged_webhooks_lost": len(lost),
            "of_which_redelivered_later": len(healed),
            "lost_for_good": len(self.lost_for_good),
            "companies_affected": len(
                {c.company_id for c in plan.companies if set(c.webhook_ids) & self.lost_for_good}
            ),
        }

    def verify(self, plan: Plan, stack: Stack, subscriber: Subscriber) -> None:
        """Check every invariant; append a line to `violations` for each breach."""
        c = self.conn
        v = self.violations
        lost = getattr(self, "lost_for_good", set())

        # 1. The receiver acknowledged every message, at most once with 202.
        by_id: dict[str, list[PostOutcome]] = defaultdict(list)
        for outcome in self.poster.outcomes:
            by_id[outcome.webhook_id].append(outcome)
        planned_ids = {wid for company in plan.companies for wid in company.webhook_ids}
        unanswered = [o for o in self.poster.outcomes if o.acked_at is None]
        if len(self.poster.outcomes) != len(plan.posts):
            v.append(f"posted {len(self.poster.outcomes)} of {len(plan.posts)} deliveries")
        if unanswered:
            sample = [(o.webhook_id, o.status, o.retried_statuses[-3:]) for o in unanswered[:3]]
            v.append(f"{len(unanswered)} deliveries never acknowledged with 2xx, e.g. {sample}")
        accepted_twice = {
            wid
            for wid, outcomes in by_id.items()
            if sum(o.status == 202 for o in outcomes) > 1 and wid not in self.lost_in_crash
        }
        if accepted_twice:
            v.append(
                f"deduplication: {len(accepted_twice)} webhook ids were accepted (202) more than "
                f"once, e.g. {sorted(accepted_twice)[:3]}"
            )
        rejected = Counter(
            status
            for o in self.poster.outcomes
            for status in o.retried_statuses
            if status[:1] == "4"
        )
        if rejected:
            v.append(f"valid, signed deliveries answered 4xx: {dict(rejected)}")
        seen = sum(1 for wid in planned_ids if c.exists(f"{PREFIX}:seen:{wid}"))
        if seen != len(planned_ids) - len(lost):
            v.append(f"{len(planned_ids) - seen} acknowledged webhook ids are not remembered")

        # 2. Nothing left unprocessed.
        for key in ("inbox", "outbox", "inbox:dead", "outbox:dead"):
            length = c.xlen(f"{PREFIX}:{key}") if c.exists(f"{PREFIX}:{key}") else 0
            if length:
                v.append(f"{PREFIX}:{key} holds {length} entries")

        # 3. No job failed; every job a killed worker held was handed back.
        abandoned_cron = Counter()
        for name in (QUEUE, DELIVERY_QUEUE):
            failed = []
            for job_id in FailedJobRegistry(name, connection=c).get_job_ids(cleanup=False):
                try:
                    job = Job.fetch(job_id, connection=c)
                except NoSuchJobError:
                    continue
                reason = (job.exc_info or "").strip()
                # The clock's cron jobs carry no work of their own (a sweep only
                # queues a drain; the next one, a second later, does the same)
                # and RQ gives cron jobs no Retry: one a killed worker held
                # (running, or popped and not yet started) is failed. Counted,
                # not a violation.
                if job.func_name in CRON_FUNCTIONS and (
                    "AbandonedJobError" in reason or "stuck in intermediate queue" in reason
                ):
                    abandoned_cron[job.func_name.rsplit(".", 1)[-1]] += 1
                    continue
                failed.append((job.func_name, reason[-300:]))
            if failed:
                # A crash loses RQ's own bookkeeping too (executions, statuses).
                (self.findings if self.config.redis_crash else v).append(
                    f"{len(failed)} failed job(s) in {name}: {failed[:3]}"
                )
            started = c.zcard(StartedJobRegistry(name, connection=c).key)
            if started:
                v.append(f"{started} job(s) still registered as started in {name}")
        self.figures["abandoned_cron_jobs_failed"] = dict(abandoned_cron)
        orphans = self._orphaned_jobs()
        if orphans:
            v.append(
                f"RQ lost {len(orphans)} job(s): status queued, in no queue or registry (popped by "
                f"a worker killed before it started them): {orphans[:3]}"
            )
        for name in (QUEUE, DELIVERY_QUEUE):
            ttl = c.ttl(f"rq:clean_registries:{name}")
            if ttl and ttl > 60:
                self.findings.append(
                    f"RQ's maintenance lock for {name} is held by a dead worker for {ttl}s more: "
                    "no abandoned job of that queue is handed back until it expires"
                )
        not_back = [
            j for j in self.abandoned if j.outcome not in ("handed_back", "vanished", "cron_failed")
        ]
        if not_back:
            v.append(
                f"{len(not_back)} job(s) held by killed workers not handed back: "
                f"{[(j.function, j.outcome, j.seen) for j in not_back[:3]]}"
            )

        # 4. Every company equals the oracle: the pure state machine applied
        # to its event set; each event applied exactly once.
        store = CompanyStore(c, Keys(PREFIX), event_log_limit=200)
        records = {}
        mismatched = []
        event_logs_wrong = []
        for company in plan.companies:
            surviving = [
                body
                for body, wid in zip(company.bodies, company.webhook_ids, strict=True)
                if wid not in lost
            ]
            events = [parse_codat_event(body) for body in surviving]
            oracle = apply_events(CompanyFacts(company_id=company.company_id), events)
            record = store.get(company.company_id)
            records[company.company_id] = record
            if record is None:
                mismatched.append((company.company_id, company.kind, "missing", oracle.state.value))
                continue
            if record.state != oracle.state or record.facts != oracle.facts:
                mismatched.append(
                    (company.company_id, company.kind, record.state.value, oracle.state.value)
                )
            if not lost and oracle.state.value != company.expected_state:
                mismatched.append(
                    (company.company_id, company.kind, "oracle", company.expected_state)
                )
            # The per-company event log keeps the events that changed the
            # facts: each at most once, and replaying them rebuilds the company.
            logged = [event for event, _ in store.events(company.company_id)]
            counts = Counter(event.id for event in logged)
            rebuilt = apply_events(CompanyFacts(company_id=company.company_id), logged).facts
            foreign = set(counts) - {event.id for event in events}
            if any(n > 1 for n in counts.values()) or foreign or rebuilt != record.facts:
                event_logs_wrong.append(
                    (
                        company.company_id,
                        sum(n - 1 for n in counts.values() if n > 1),
                        len(foreign),
                        rebuilt == record.facts,
                    )
                )
        if mismatched:
            v.append(
                f"{len(mismatched)} companies differ from the oracle "
                f"(id, kind, stored, oracle): {mismatched[:5]}"
            )
        if event_logs_wrong:
            v.append(
                f"{len(event_logs_wrong)} companies' event logs are wrong (id, events logged "
                f"twice, events not theirs, replay rebuilds the company): {event_logs_wrong[:5]}"
            )
        applied = self._applied_from_logs()
        applied_twice = {wid: n for wid, n in applied.items() if n > 1}
        if applied_twice:
            # After a Redis crash a commit can be lost after its worker logged it;
            # the entry is then applied again. Only a crash explains that.
            (self.findings if self.config.redis_crash else v).append(
                f"{len(applied_twice)} webhooks were applied more than once (workers' "
                f"event.applied lines), e.g. {sorted(applied_twice.items())[:3]}"
            )
        self.figures["applied_but_not_logged"] = len(planned_ids - set(applied) - lost)
        self._check_api(stack, plan, records, v)

        # 5. Notifications: company.ready exactly once for each company that
        # became ready; state changes and revocations exactly as in history.
        if self.subscription_id is not None:
            self._check_notifications(plan, records, subscriber, v)

    def _orphaned_jobs(self) -> list[tuple[str, str]]:
        """Jobs RQ reports queued that no queue, intermediate queue or registry
        holds: nothing will ever run them."""
        c = self.conn
        held: set[str] = set()
        for name in (QUEUE, DELIVERY_QUEUE):
            for key in (f"rq:queue:{name}", f"rq:queue:{name}:intermediate"):
                held.update(i.decode() for i in c.lrange(key, 0, -1))
            for registry in ("wip", "scheduled", "failed", "finished", "deferred"):
                for member in c.zrange(f"rq:{registry}:{name}", 0, -1):
                    held.add(member.decode().split(":", 1)[0])
        orphans = []
        for key in c.scan_iter("rq:job:*", count=1000):
            job_id = key.decode().removeprefix("rq:job:")
            if ":" in job_id or job_id in held:
                continue
            status, description = c.hmget(key, "status", "description")
            if status == b"queued":
                orphans.append((job_id, (description or b"").decode()[:80]))
        return orphans

    def _applied_from_logs(self) -> Counter[str]:
        """How often each webhook id was applied, from the workers' logs. A
        worker killed between its commit and its log line leaves an
        application unlogged (counted in the figures), never a false double."""
        applied: Counter[str] = Counter()
        for path in sorted((self.data_dir / "logs").glob("worker-*.stdout")):
            with path.open(errors="replace") as lines:
                for line in lines:
                    if '"event.applied"' not in line:
                        continue
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        applied[json.loads(line)["webhook_id"]] += 1
        return applied

    def _check_api(self, stack: Stack, plan: Plan, records: dict, v: list[str]) -> None:
        wrong = []
        with httpx.Client(
            base_url=stack.base_url, headers=AUTH, trust_env=False, timeout=10
        ) as api:
            for company in plan.companies:
                record = records.get(company.company_id)
                answer = api.get(f"/api/companies/{company.company_id}")
                state = answer.json().get("state") if answer.status_code == 200 else None
                if record is None or state != record.state.value:
                    wrong.append((company.company_id, answer.status_code, state))
        if wrong:
            v.append(f"GET /api/companies disagrees with the store for {len(wrong)}: {wrong[:3]}")
