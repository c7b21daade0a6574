"""Issue 12: requeueing a job id RQ does not know is a 404, not a 500."""

from __future__ import annotations

import fakeredis
import pytest

from app import create_app

ENV = {
    "REDIS_URL": "redis://unused",
    "API_TOKEN": "api-token",
    "CODAT_WEBHOOK_SECRETS": "whsec_dGVzdC1zZWNyZXQ=",
}


@pytest.fixture
def client():
    return create_app(ENV, redis=fakeredis.FakeRedis()).test_client()


def test_requeueing_an_unknown_job_is_a_404(client):
    url = "/ops/rq/job/no-such-job/requeue"
    assert client.post(url).status_code == 401  # still authenticated first
    response = client.post(url, headers={"Authorization": "Bearer api-token"})
    assert response.status_code == 404, response.data
