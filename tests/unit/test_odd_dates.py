"""Issue 12, defect 4: odd dates. Only timestamps whose UTC form has a
four-digit year are accepted (400 otherwise), stored fixed-width, and no page
or API answers 500 on an odd date already stored."""

from __future__ import annotations

import base64
import json
import zlib
from datetime import UTC, datetime

import fakeredis
import pytest

from app import create_app
from codat_authflow.company_updates import CompanyUpdates
from codat_authflow.storage.companies import CompanyStore
from codat_authflow.storage.keys import Keys
from state_machine import parse_codat_event
from state_machine.events import InvalidEvent, canonical_timestamp, timestamp_seconds
from tests.support.lifecycles import build
from tests.support.signing import encode_body, signed_headers

SECRET = "whsec_" + "dGVzdC1zZWNyZXQtZm9yLXVuaXQtdGVzdHMtMDAwMDAw"
ENV = {"REDIS_URL": "redis://unused", "API_TOKEN": "api-token", "CODAT_WEBHOOK_SECRETS": SECRET}
BEARER = {"Authorization": "Bearer api-token"}
OPS = {"Authorization": "Basic " + base64.b64encode(b"ops:api-token").decode()}


@pytest.fixture
def redis():
    return fakeredis.FakeRedis()


@pytest.fixture
def client(redis):
    return create_app(ENV, redis=redis).test_client()


@pytest.mark.parametrize(
    "value",
    ["0001-01-01T00:00+14:00", "0001-01-01T00:00:00+00:01", "9999-12-31T23:59:59-00:01"],
)
def test_a_time_outside_years_1_to_9999_in_utc_is_invalid_not_a_crash(value):
    with pytest.raises(InvalidEvent, match=r"0001\.\.9999"):
        canonical_timestamp(value)


def test_the_receiver_answers_400_to_a_date_before_year_1_in_utc(client, redis):
    life, _ = build("happy_path")
    body = dict(life.events[0], generatedDate="0001-01-01T00:00+14:00")
    raw = encode_body(body)
    response = client.post("/webhooks/codat", data=raw, headers=signed_headers(SECRET, raw))
    assert response.status_code == 400, response.data
    assert response.json["error"]["code"] == "invalid_body"
    assert redis.xlen("authflow:inbox") == 0


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("0999-06-01T12:00:00Z", "0999-06-01T12:00:00.000000Z"),
        ("0001-01-02T13:00+14:00", "0001-01-01T23:00:00.000000Z"),
        ("2026-03-01T10:00:00+01:00", "2026-03-01T09:00:00.000000Z"),
    ],
)
def test_timestamps_are_stored_fixed_width_so_they_sort_as_time(value, stored):
    assert canonical_timestamp(value) == stored
    assert len(stored) == len("2026-01-01T00:00:00.000000Z")
    assert (stored < "2026-01-01T00:00:00.000000Z") == (value < "2026")


def _store_with_odd_dates(redis) -> str:
    """A company stored with the year-999 stamps the old code wrote ("999-...")."""
    store = CompanyStore(redis, Keys())
    life, _ = build("happy_path")
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    for body in life.events:
        CompanyUpdates(store).apply({life.company_id: [parse_codat_event(body)]}, now=lambda: now)
    key = Keys().company(life.company_id)
    text = zlib.decompress(redis.get(key)).decode()
    document = json.loads(text)
    for entry in document.get("history", []):
        entry["eventGeneratedAt"] = "999-01-01T00:00:00.000000Z"
    text = (
        json.dumps(document, separators=(",", ":"))
        .replace('"created":"20', '"created":"9')
        .replace('"createdAt":"20', '"createdAt":"9')
    )
    redis.set(key, zlib.compress(text.encode()))
    return life.company_id


def test_funnel_api_and_page_answer_with_an_odd_date_already_stored(client, redis):
    company_id = _store_with_odd_dates(redis)
    assert b"999-01-01" in zlib.decompress(redis.get(Keys().company(company_id)))
    response = client.get("/api/funnel", headers=BEARER)
    assert response.status_code == 200, response.data
    assert response.json["steps"][0]["companies"] == 1
    assert client.get("/ops/funnel", headers=OPS).status_code == 200
    assert client.get(f"/api/companies/{company_id}", headers=BEARER).status_code == 200


@pytest.mark.parametrize("bound", ["from", "to"])
def test_funnel_query_dates_near_year_1_are_a_400_not_a_500(client, bound):
    response = client.get(f"/api/funnel?{bound}=0001-01-01T00:00%2B14:00", headers=BEARER)
    assert response.status_code == 400, response.data
    response = client.get(f"/ops/funnel?{bound}=0001-01-01", headers=OPS)
    assert response.status_code in (200, 400), response.data


def test_stored_stamps_are_read_whatever_their_width():
    assert timestamp_seconds("999-01-01T00:00:00.000000Z") < 0
    assert timestamp_seconds("2026-01-01T00:00:00.000000Z") == pytest.approx(1767225600.0)
    assert timestamp_seconds("not a date") is None
    assert timestamp_seconds(None) is None
