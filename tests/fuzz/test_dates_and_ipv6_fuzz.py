"""Issue 12: odd dates and IPv4-embedding IPv6 addresses, fuzzed.

Dates: `canonical_timestamp` accepts exactly the date-times whose UTC form
falls in years 0001..9999, always answers the same fixed width (so text order
is time order), and raises nothing but InvalidEvent. IPv6: every spelling of a
private IPv4 address is refused by the SSRF guard; the same spellings of a
public one are not."""

from __future__ import annotations

import contextlib
import ipaddress
from datetime import UTC, datetime

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from codat_authflow.delivery.url_guard import UnsafeURL, check_url
from state_machine.events import InvalidEvent, canonical_timestamp, timestamp_seconds
from tests.fuzz.strategies import embeddings, iso_timestamps, private_ipv4

WIDTH = len("2026-01-01T00:00:00.000000Z")


def utc_or_none(text: str) -> datetime | None:
    parsed = datetime.fromisoformat(text)
    parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        return None


@settings(max_examples=400, deadline=None)
@given(st.lists(iso_timestamps(), min_size=2, max_size=2))
def test_timestamps_are_accepted_exactly_when_utc_fits_and_sort_as_time(texts):
    results = []
    for text in texts:
        expected = utc_or_none(text)
        if expected is None:
            event("rejected: outside years 1..9999 in UTC")
            with pytest.raises(InvalidEvent):
                canonical_timestamp(text)
            continue
        stored = canonical_timestamp(text)
        assert len(stored) == WIDTH, stored
        assert datetime.fromisoformat(stored) == expected
        assert timestamp_seconds(stored) == pytest.approx(expected.timestamp())
        results.append((stored, expected))
    if len(results) == 2:
        (a, when_a), (b, when_b) = results
        assert (a < b) == (when_a < when_b)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_any_text_is_a_timestamp_or_invalid_and_never_crashes_a_reader(text):
    with contextlib.suppress(InvalidEvent):
        assert len(canonical_timestamp(text)) == WIDTH
    timestamp_seconds(text)  # the funnel's reader of stored stamps never raises


@settings(max_examples=300, deadline=None)
@given(private_ipv4(), st.sampled_from(["http", "https"]))
def test_every_ipv6_spelling_of_a_private_ipv4_address_is_refused(v4, scheme):
    for form, address in embeddings(v4).items():
        event(form)
        with pytest.raises(UnsafeURL, match="non-public"):
            check_url(f"{scheme}://[{address}]/hooks", allow_private=False)


@pytest.mark.parametrize("form", sorted(embeddings(ipaddress.IPv4Address("8.8.8.8"))))
def test_the_same_spellings_of_a_public_ipv4_address_are_allowed(form):
    address = embeddings(ipaddress.IPv4Address("8.8.8.8"))[form]
    checked = check_url(f"https://[{address}]:8443/hooks", allow_private=False)
    assert ipaddress.ip_address(checked.address) == address


@pytest.mark.parametrize("address", ["64:ff9b:1::808:808", "64:ff9b:1:7f00:1::"])
def test_the_local_use_nat64_prefix_is_refused_outright(address):
    with pytest.raises(UnsafeURL):
        check_url(f"http://[{address}]/", allow_private=False)
