"""The soak's report: what happened (figures), what broke (violations) and
what a reader should know (findings)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from perf.soak.measure import CPU_MS
from perf.soak.plan import Plan
from perf.soak.stack import Stack
from tests.support.subscriber import Subscriber


@dataclass
class SoakReport:
    config: dict[str, Any]
    ok: bool
    violations: list[str]
    figures: dict[str, Any]
    findings: list[str]
    data_dir: str

    def text(self) -> str:
        lines = [f"soak: {'PASS' if self.ok else 'FAIL'}  (data and logs: {self.data_dir})"]
        for key, value in self.figures.items():
            if isinstance(value, dict):
                lines.append(f"  {key}:")
                for sub, subvalue in value.items():
                    lines.append(f"    {sub}: {subvalue}")
            else:
                lines.append(f"  {key}: {value}")
        if self.findings:
            lines.append("findings:")
            lines += [f"  - {finding}" for finding in self.findings]
        if self.violations:
            lines.append(f"INVARIANTS BROKEN ({len(self.violations)}):")
            lines += [f"  ! {violation}" for violation in self.violations]
        else:
            lines.append("all invariants hold")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=str)


class Figures:
    """Part of `SoakRun` (perf/soak/run.py): the report's figures."""

    def _figures(self, plan: Plan, stack: Stack, subscriber: Subscriber) -> None:
        f = self.figures
        outcomes = self.poster.outcomes
        statuses = Counter(o.status for o in outcomes)
        retried = Counter(s for o in outcomes for s in o.retried_statuses)
        kinds = Counter(c.kind for c in plan.companies)
        f["companies"] = len(plan.companies)
        f["events"] = plan.messages
        f["deliveries_posted"] = len(outcomes)
        f["receiver_answers"] = {str(k): n for k, n in sorted(statuses.items(), key=str)}
        f["receiver_retries"] = dict(retried)
        f["lifecycles"] = dict(sorted(kinds.items()))
        f["final_states"] = dict(Counter(c.expected_state for c in plan.companies))
        f["worker_kills"] = {
            "kills": self.kills,
            "of_idle_workers": self.kills_idle,
            "jobs_abandoned": len(self.abandoned),
            "handed_back": sum(j.outcome == "handed_back" for j in self.abandoned),
            "vanished_unseen": sum(j.outcome == "vanished" for j in self.abandoned),
            "hand_back_seconds_max": round(
                max((j.resolved_after or 0 for j in self.abandoned), default=0), 1
            ),
            "by_function": dict(Counter(j.function.rsplit(".", 1)[-1] for j in self.abandoned)),
        }
        f["redis_restarts"] = [
            {
                "at": at,
                "downtime_s": down,
                "mode": "crash" if self.config.redis_crash else "graceful",
            }
            for at, down in self.redis_downtime
        ]
        f["unexpected_process_exits"] = [asdict(e) for e in stack.exits]
        for exit_ in stack.exits:
            self.findings.append(
                f"{exit_.name} (pid {exit_.pid}) exited on its own with rc {exit_.returncode} at "
                f"{exit_.at}s{' just after a Redis restart' if exit_.near_redis_restart else ''}; "
                f"restarted by the harness. Last log lines: {exit_.last_lines!r}"
            )
        f["subscriber"] = {
            "requests": subscriber.state.requests,
            "rejected": subscriber.state.rejected,
        }
        # Redis commands per event.
        total: Counter[str] = Counter()
        for segment in self.stats_segments:
            total.update(segment)
        idle = {k: v * self.soak_seconds for k, v in self.idle_rate.items()}
        net = Counter(
            {
                k: max(0, int(n - idle.get(k, 0) - self.own_commands.get(k, 0)))
                for k, n in total.items()
            }
        )
        events = max(1, plan.messages)
        cpu_ms = net.pop(CPU_MS, 0)
        total.pop(CPU_MS, None)
        idle_cpu_per_s = self.idle_rate.pop(CPU_MS, 0.0)
        f["redis"] = {
            "commands_total": sum(total.values()),
            "harness_own_commands": sum(self.own_commands.values()),
            "idle_background_per_s": round(sum(self.idle_rate.values()), 1),
            "commands_net_of_idle": sum(net.values()),
            "per_event": round(sum(net.values()) / events, 1),
            "per_delivery_posted": round(sum(net.values()) / max(1, len(outcomes)), 1),
            "top_per_event": {
                name: round(n / events, 2) for name, n in net.most_common(15) if n / events >= 0.05
            },
            "used_memory_mb": round(int(self.conn.info("memory")["used_memory"]) / 2**20, 1),
            "cpu_ms_per_event": round(cpu_ms / events, 3),
            "cpu_ms_idle_per_s": round(idle_cpu_per_s, 1),
        }
