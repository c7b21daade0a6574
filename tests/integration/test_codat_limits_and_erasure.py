"""The rate-limit pause (a Lua script inside the drain's MULTI) and erasure
(WATCH/MULTI, the tombstone the drain checks) on a real Redis: the unit
tests run them on fakeredis."""

from __future__ import annotations

import time
import uuid

import pytest
import redis as redis_lib

from codat_authflow.bootstrap import Services
from codat_authflow.journey import rate_limit
from codat_authflow.journey.erasure import erase_company
from codat_authflow.journey.service import Journey
from codat_authflow.settings import Settings
from tests.support.lifecycles import Connection, Lifecycle, build, spec_example
from tests.support.signing import encode_body
from workers.jobs import drain

pytestmark = pytest.mark.integration


class GoneAtCodat:
    def delete_company(self, company_id):
        self.deleted = company_id


@pytest.fixture
def ctx(redis_url):
    env = {
        "REDIS_URL": redis_url,
        "API_TOKEN": "t",
        "CODAT_WEBHOOK_SECRETS": "whsec_dGVzdC1zZWNyZXQ=",
        "CODAT_API_KEY": "key",
    }
    services = Services.build(Settings.from_env(env), redis_lib.Redis.from_url(redis_url))
    services.inbox.ensure_group()
    return services


def accept(ctx, *bodies):
    for body in bodies:
        ctx.inbox.accept(f"msg_{uuid.uuid4().hex}", encode_body(body), 0)


def iso(epoch):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def test_rate_limit_webhooks_pause_and_resume_on_real_redis(ctx):
    now = time.time()
    reached = spec_example("client.rateLimit.reached")
    reached.update(id=str(uuid.uuid4()), generatedDate=iso(now - 5))
    reached["payload"]["expiryDate"] = iso(now + 7200)
    accept(ctx, reached)
    assert drain(ctx)["ignored"] == 1
    pause = rate_limit.current_pause(ctx.redis, ctx.inbox.keys)
    assert pause is not None and abs(pause.until - (int(now) + 7200)) <= 1
    assert 0 < ctx.redis.ttl(ctx.inbox.keys.codat_rate_limit) <= 8 * 24 * 3600

    reset = spec_example("client.rateLimit.reset")
    reset.update(id=str(uuid.uuid4()), generatedDate=iso(now))
    accept(ctx, reset)
    drain(ctx)
    assert rate_limit.current_pause(ctx.redis, ctx.inbox.keys) is None
    assert ctx.inbox.backlog() == 0


def test_an_erased_company_stays_erased_on_real_redis(ctx):
    life, _ = build("happy_path")
    accept(ctx, *life.events)
    drain(ctx)
    journey = Journey.build(ctx.settings, ctx.redis, ctx.store, codat=GoneAtCodat())
    erasure = erase_company(journey, life.company_id)
    assert "company.revoked" in erasure.notified
    assert ctx.store.get(life.company_id) is None

    late = Lifecycle(company_id=life.company_id)
    accept(ctx, late.connection("connection.connected", Connection(str(uuid.uuid4()))))
    totals = drain(ctx)
    assert totals["ignored"] == 1 and totals["applied"] == 0
    assert ctx.store.get(life.company_id) is None and ctx.inbox.backlog() == 0
