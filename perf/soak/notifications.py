"""The notification invariants: company.ready exactly once per company that
became ready, state changes and revocations exactly as in its history, every
delivery marked delivered received and correctly signed."""

from __future__ import annotations

from collections import Counter, defaultdict

from perf.soak.plan import Plan
from state_machine.notifications import notification_id
from tests.support.subscriber import Subscriber


class NotificationOracle:
    """Part of `SoakRun` (perf/soak/run.py), called by `Oracle.verify`."""

    def _check_notifications(
        self, plan: Plan, records: dict, subscriber: Subscriber, v: list[str]
    ) -> None:
        received: dict[tuple[str, str], set[str]] = defaultdict(set)
        copies = Counter()
        for item in subscriber.received:
            envelope = item.envelope
            received[(envelope["type"], envelope["data"]["companyId"])].add(item.webhook_id)
            copies[item.webhook_id] += 1
            if item.webhook_id != envelope["id"]:
                v.append(f"webhook-id {item.webhook_id} differs from the envelope's id")
        wrong_ready, wrong_changes, after_crash = [], [], []
        wants = set(self.config.event_types)
        lost_companies = {
            company.company_id
            for company in plan.companies
            if set(company.webhook_ids) & self.lost_in_crash
        }
        for company in plan.companies:
            cid = company.company_id
            # After a crash, notifications sent for a commit Redis then lost may
            # describe transitions the company, re-applying its events in other
            # batches, no longer went through; company.ready (one id per
            # company) must still hold unless the company lost events.
            ready_sink = after_crash if cid in lost_companies else wrong_ready
            changes_sink = after_crash if self.config.redis_crash else wrong_changes
            record = records.get(cid)
            if record is None:
                continue
            if wants & {"*", "company.ready"}:
                # The first readiness has the company's own id; a platform
                # linked later may add one per new basis (at most one per
                # connection that made the company ready).
                first = notification_id("company.ready", cid)
                got = received[("company.ready", cid)]
                announced = len(record.ready_connections or ())
                if record.first_ready_at is None:
                    ok = not got
                else:
                    ok = first in got and len(got) <= max(announced, 1)
                if not ok:
                    ready_sink.append((cid, record.state.value, len(got)))
                if record.state.value == "ready" and record.first_ready_at is None:
                    ready_sink.append((cid, "ready but never marked ready", 0))
            history = record.history
            if len(history) < 25 and wants & {"*", "company.state_changed"}:
                changes = {
                    notification_id(cid, h.from_state, h.to_state, h.event_id) for h in history
                }
                if received[("company.state_changed", cid)] != changes:
                    changes_sink.append((cid, "state_changed", len(changes)))
            if len(history) < 25 and wants & {"*", "company.revoked"}:
                revoked = {
                    notification_id("company.revoked", cid, h.event_id)
                    for h in history
                    if h.to_state == "revoked"
                }
                if received[("company.revoked", cid)] != revoked:
                    changes_sink.append((cid, "revoked", len(revoked)))
        if wrong_ready:
            v.append(
                f"company.ready: {len(wrong_ready)} companies without exactly the one expected id "
                f"(id, state, distinct ids received): {wrong_ready[:5]}"
            )
        if wrong_changes:
            v.append(
                f"{len(wrong_changes)} companies' notifications differ from their history: "
                f"{wrong_changes[:5]}"
            )
        if after_crash:
            self.findings.append(
                f"{len(after_crash)} notification sets no longer match the history of companies "
                f"after the crash (commits or events lost): {after_crash[:3]}"
            )
        if subscriber.state.rejected:
            v.append(f"the subscriber rejected {subscriber.state.rejected} signatures")
        deliveries = self._deliveries()
        statuses = Counter(d.status for d in deliveries)
        self.figures["deliveries"] = dict(statuses)
        self.figures["notifications_received"] = {
            "distinct": len(copies),
            "duplicate_copies": sum(n - 1 for n in copies.values()),
        }
        dead = statuses.get("dead", 0)
        if dead:
            if self.config.allow_dead_letters:
                self.findings.append(
                    f"{dead} deliveries were dead-lettered (allowed by --allow-dead-letters)"
                )
            else:
                v.append(f"{dead} deliveries dead-lettered (fault windows outlasted the schedule?)")
        if statuses.get("pending"):
            v.append(f"{statuses['pending']} deliveries still pending")
        delivered = {d.notification_id for d in deliveries if d.status == "delivered"}
        missing = delivered - set(copies)
        if missing:
            v.append(f"{len(missing)} deliveries marked delivered never reached the subscriber")
        unknown = set(copies) - {d.notification_id for d in deliveries}
        if unknown:
            (self.findings if self.config.redis_crash else v).append(
                f"the subscriber received {len(unknown)} notifications with no delivery record"
            )
