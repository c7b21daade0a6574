"""Idempotent company creation: what Prism cannot show (distinct ids, a
claim left by a dead process, a deleted company).

`StubCodat` stands in for our adapter (`codat_authflow.journey.codat.CodatClient`); the HTTP
calls themselves are contract-tested against Prism in tests/contract."""

from __future__ import annotations

import copy
import json
import uuid
from functools import cache

import fakeredis
import pytest

from codat_authflow.journey import companies
from codat_authflow.journey.errors import CreationInProgress
from codat_authflow.journey.events import company_deleted
from codat_authflow.journey.service import Journey
from codat_authflow.settings import Settings
from codat_authflow.storage.companies import CompanyStore
from codat_authflow.storage.keys import Keys
from tests.support.processes import REPO_ROOT

ENV = {
    "REDIS_URL": "redis://unused",
    "API_TOKEN": "t",
    "CODAT_WEBHOOK_SECRETS": "whsec_dGVzdC1zZWNyZXQ=",
    "CODAT_API_KEY": "a2V5",
}


@cache
def _company_example():
    spec = json.loads((REPO_ROOT / "tests" / "data" / "Codat-Platform.json").read_text())
    return spec["paths"]["/companies"]["post"]["responses"]["200"]["content"]["application/json"][
        "examples"
    ]["With no description"]["value"]


class StubCodat:
    def __init__(self):
        self.created: list[dict] = []

    def find_companies_named(self, name):
        return [copy.deepcopy(c) for c in self.created if c["name"] == name]

    def find_companies_tagged(self, tag, value):
        return [copy.deepcopy(c) for c in self.created if (c.get("tags") or {}).get(tag) == value]

    def create_company(self, name, description=None, tags=None):
        company = {**copy.deepcopy(_company_example()), "id": str(uuid.uuid4()), "name": name}
        if tags:
            company["tags"] = dict(tags)
        self.created.append(company)
        return company


@pytest.fixture
def journey():
    redis = fakeredis.FakeRedis()
    settings = Settings.from_env(ENV)
    return Journey.build(
        settings, redis, CompanyStore(redis, Keys(settings.key_prefix)), codat=StubCodat()
    )


def test_one_name_one_company(journey):
    first = companies.create_company(journey, "customer-1", None, None)
    again = companies.create_company(journey, "customer-1", None, None)
    other = companies.create_company(journey, "customer-2", None, None)
    assert (first.created, again.created, other.created) == (True, False, True)
    assert first.record.facts.company_id == again.record.facts.company_id
    assert other.record.facts.company_id != first.record.facts.company_id
    assert len(journey.codat.created) == 2
    assert first.record.facts.name == "customer-1" and first.record.state.value == "created"


def test_losing_our_mapping_adopts_the_company_codat_has(journey):
    first = companies.create_company(journey, "customer-1", None, None)
    journey.redis.delete(journey.keys.company_by_name("customer-1"))
    again = companies.create_company(journey, "customer-1", None, None)
    assert not again.created
    assert again.record.facts.company_id == first.record.facts.company_id
    assert len(journey.codat.created) == 1


def test_a_claim_in_progress_is_409_and_a_dead_claim_expires(journey, monkeypatch):
    monkeypatch.setattr(companies, "WAIT_FOR_OTHER_SECONDS", 0.3)
    key = journey.keys.company_by_name("customer-1")
    journey.redis.set(key, "pending:someone-else", ex=60)
    with pytest.raises(CreationInProgress) as refused:
        companies.create_company(journey, "customer-1", None, None)
    assert refused.value.status == 409 and refused.value.retry_after == 1
    journey.redis.delete(key)  # what the TTL does when the claimant died
    assert companies.create_company(journey, "customer-1", None, None).created


def test_a_name_whose_company_was_deleted_gets_a_new_company(journey):
    first = companies.create_company(journey, "customer-1", None, None)
    old_id = first.record.facts.company_id
    journey.apply(old_id, [company_deleted(old_id, source="api", generated_at=journey.stamp())])
    journey.codat.created.clear()  # deleted in Codat: no longer listed
    second = companies.create_company(journey, "customer-1", None, None)
    assert second.created and second.record.facts.company_id != old_id
    assert journey.redis.get(journey.keys.company_by_name("customer-1")).decode() == (
        second.record.facts.company_id
    )


# -- by customer id (the company tag `customerId`) -------------------------------------


CUSTOMER = "cust_123/\u03b1"  # `_`, `/` and a Greek alpha: none allowed in a company name


def test_one_customer_id_one_company_whatever_its_characters(journey):
    first = companies.create_customer_company(journey, CUSTOMER, None, None, {"region": "uk"})
    again = companies.create_customer_company(journey, CUSTOMER, "Toft & sons", None, None)
    other = companies.create_customer_company(journey, "cust_124", None, None, None)
    assert (first.created, again.created, other.created) == (True, False, True)
    assert first.record.facts.company_id == again.record.facts.company_id
    assert other.record.facts.company_id != first.record.facts.company_id
    created = journey.codat.created
    assert len(created) == 2
    assert created[0]["tags"] == {"region": "uk", "customerId": "b64.Y3VzdF8xMjMvzrE"}
    assert created[0]["name"] == "cust-123--"  # display name Codat accepts
    assert created[1]["tags"] == {"customerId": "cust_124"}  # readable when it can be


def test_losing_our_marker_adopts_the_company_tagged_at_codat(journey):
    first = companies.create_customer_company(journey, CUSTOMER, "Toft", None, None)
    journey.redis.delete(journey.keys.company_by_customer(CUSTOMER))
    again = companies.create_customer_company(journey, CUSTOMER, "Toft", None, None)
    assert not again.created
    assert again.record.facts.company_id == first.record.facts.company_id
    assert len(journey.codat.created) == 1


def test_a_customer_id_and_a_name_do_not_share_markers(journey):
    by_name = companies.create_company(journey, "cust-1", None, None)
    by_customer = companies.create_customer_company(journey, "cust-1", None, None, None)
    assert by_customer.created
    assert by_customer.record.facts.company_id != by_name.record.facts.company_id


@pytest.mark.parametrize(
    ("customer_id", "value"),
    [
        ("cust_123", "cust_123"),
        ("acme:42/eu#7", "acme:42/eu#7"),
        ("user@example.com", "user@example.com"),
        ("cust_123/\u03b1", "b64.Y3VzdF8xMjMvzrE"),
        ("a&&b", "b64.YSYmYg"),
        ("a=b", "b64.YT1i"),
        ("two words", "b64.dHdvIHdvcmRz"),
        ("b64.Y3VzdA", "b64.YjY0LlkzVnpkQQ"),  # never mistaken for an encoded one
        ("x" * 100, "x" * 100),
    ],
)
def test_customer_tag_values_are_safe_in_codats_query_language(customer_id, value):
    assert companies.customer_tag_value(customer_id) == value
    assert len(value) <= 100


def test_long_customer_ids_are_hashed_within_codats_100_characters():
    long_id = "\u03b1" * 200
    value = companies.customer_tag_value(long_id)
    assert value.startswith("sha256.") and len(value) == 71
    assert value != companies.customer_tag_value(long_id + "x")
    assert len(companies.customer_tag_value("\u03b1" * 36)) == 100  # 72 bytes: still Base64


@pytest.mark.parametrize(
    ("customer_id", "name"),
    [
        ("cust_123", "cust-123"),
        ("Toft & sons", "Toft & sons"),
        ("___", "Customer"),
        ("\u03b1", "Customer"),
    ],
)
def test_display_names_keep_to_codats_pattern(customer_id, name):
    assert companies.display_name(customer_id) == name
