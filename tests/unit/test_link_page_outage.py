"""`GET /link/callback` while Redis is away: the rate limiter in front of it
(flask-limiter on Redis, app/rate_limits.py) must not turn the outage into a 500."""

from __future__ import annotations

import fakeredis

from app import create_app

ENV = {
    "REDIS_URL": "redis://unused",
    "API_TOKEN": "api-token",
    "CODAT_WEBHOOK_SECRETS": "whsec_dGVzdC1zZWNyZXQ=",
}


def test_the_link_page_answers_503_not_500_when_redis_is_away():
    """The rate limiter (flask-limiter on Redis) fails open; the page then
    answers the app's JSON 503, because it cannot read the company."""
    server = fakeredis.FakeServer()
    redis = fakeredis.FakeRedis(server=server)
    app = create_app(ENV, redis=redis)
    server.connected = False
    response = app.test_client().get(
        "/link/callback",
        query_string={
            "companyId": "0498e921-9b53-4396-a412-4f2f5983b0a2",
            "connectionId": "ee2eb431-c0fa-4dc9-93fa-d29781c12bcd",
            "statusCode": "200",
        },
    )
    assert response.status_code == 503, response.data[:300]
