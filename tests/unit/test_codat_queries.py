"""Codat query strings and Link URLs."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest

from codat_authflow.journey.codat import add_query_params, integrations_query
from codat_authflow.journey.codat.queries import encoded_query

LINK = "https://link-api.codat.io/companies/86bd88cb/connections/2e2eb431/start"


@pytest.mark.parametrize(
    ("source_type", "enabled", "query"),
    [
        ("accounting", True, "sourceType=Accounting&&enabled=true"),
        ("banking", None, "sourceType=Banking"),
        ("commerce", False, "sourceType=Commerce&&enabled=false"),
        ("bankfeed", None, "sourceType=BankFeed"),
        ("BankFeed", True, "sourceType=BankFeed&&enabled=true"),
        ("expense", None, "sourceType=Expense"),
        ("other", None, "sourceType=Other"),
        ("unknown", None, "sourceType=Unknown"),
        (None, True, "enabled=true"),
        (None, None, None),
    ],
)
def test_integrations_query(source_type, enabled, query):
    assert integrations_query(source_type, enabled) == query


def test_the_encoded_query_is_the_one_codats_guide_shows():
    assert encoded_query(integrations_query("accounting", True)) == (
        "sourceType%3DAccounting%26%26enabled%3Dtrue"
    )


def test_params_are_added_to_a_url_without_a_query():
    assert add_query_params(LINK, {"link.showSandboxIntegrations": "false"}) == (
        LINK + "?link.showSandboxIntegrations=false"
    )


def test_params_are_appended_to_a_url_that_has_a_query_and_keep_it_byte_for_byte():
    url = LINK + "?otp=a%2Bb%3D%3D&x=1"
    added = add_query_params(url, {"link.showSandboxIntegrations": "false"})
    assert added == url + "&link.showSandboxIntegrations=false"


def test_a_param_already_there_is_replaced_not_duplicated():
    added = add_query_params(LINK + "?otp=abc&lang=fr", {"lang": "en"})
    assert parse_qsl(urlsplit(added).query) == [("otp", "abc"), ("lang", "en")]


def test_values_are_encoded_and_the_fragment_stays_last():
    added = add_query_params("https://host.example/done?step=3#top", {"next": "a b&c"})
    assert added == "https://host.example/done?step=3&next=a%20b%26c#top"


def test_no_params_leaves_the_url_alone():
    assert add_query_params(LINK + "?", {}) == LINK + "?"
