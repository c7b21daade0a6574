"""The traffic: companies with realistic mixed lifecycles, every event delivered
1..N times, laid out in time and shuffled within windows (`plan_traffic`)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from perf.soak.config import SoakConfig
from tests.support.lifecycles import LIFECYCLES, build
from tests.support.signing import encode_body


@dataclass(frozen=True)
class CompanyPlan:
    company_id: str
    kind: str
    expected_state: str
    bodies: tuple[dict[str, Any], ...]
    webhook_ids: tuple[str, ...]


@dataclass(frozen=True)
class Post:
    webhook_id: str
    company_id: str
    body: bytes
    copy: int  # 0: the first delivery of this message, 1+: a duplicate


@dataclass
class Plan:
    companies: list[CompanyPlan]
    posts: list[Post]

    @property
    def messages(self) -> int:
        return sum(len(c.webhook_ids) for c in self.companies)


def plan_traffic(config: SoakConfig) -> Plan:
    """Companies, their events, and the order in which Codat delivers them.

    Each company starts at a random point of the run and its events follow
    one another; every event is delivered 1..max_copies times (duplicates
    arrive a little later, as Codat's retries do); the resulting time line is
    then shuffled within windows of ``window`` deliveries."""
    rng = random.Random(config.seed)
    kinds = [kind for kind, weight in config.mix for _ in range(weight)]
    unknown = sorted(set(kinds) - set(LIFECYCLES))
    if unknown:
        raise ValueError(f"unknown lifecycle kinds {unknown}; known: {sorted(LIFECYCLES)}")
    companies: list[CompanyPlan] = []
    timed: list[tuple[float, int, Post]] = []
    for index in range(config.companies):
        kind = kinds[index % len(kinds)] if index < len(kinds) else rng.choice(kinds)
        life, expected = build(kind, company_name=f"Soak company {index}")
        start = rng.random()
        gap = rng.uniform(0.002, 0.03)
        webhook_ids = []
        for n, body in enumerate(life.events):
            webhook_id = f"msg_{rng.getrandbits(96):024x}"
            webhook_ids.append(webhook_id)
            raw = encode_body(body)
            at = start + n * gap
            for copy in range(rng.randint(1, config.max_copies)):
                when = at + (rng.uniform(0.0, 0.05) if copy else 0.0)
                timed.append((when, len(timed), Post(webhook_id, life.company_id, raw, copy)))
        companies.append(
            CompanyPlan(life.company_id, kind, expected, tuple(life.events), tuple(webhook_ids))
        )
    timed.sort()
    posts = [post for _, _, post in timed]
    window = max(1, config.window)
    for begin in range(0, len(posts), window):
        chunk = posts[begin : begin + window]
        rng.shuffle(chunk)
        posts[begin : begin + window] = chunk
    return Plan(companies, posts)
