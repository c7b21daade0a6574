"""The company-document codec loses nothing: decode(encode(x)) == x for every
shape a record, its facts and its event log can take.

Strategies build each dataclass field by field (every optional field None or
set, every tuple empty or not, flags on and off), so a field the codec forgets,
a default it writes as "absent", or a type it changes (tuple -> list, bool ->
int) shows up as an inequality. tests/unit/test_codec.py covers reading
version 1 documents.
"""

from __future__ import annotations

import json
import zlib

from hypothesis import given, settings
from hypothesis import strategies as st

from codat_authflow.storage.codec import (
    FORMAT_VERSION,
    CompanyRecord,
    HistoryEntry,
    decode_record,
    encode_record,
    event_from_log,
    event_to_log,
    facts_from_json,
    facts_to_json,
)
from state_machine import (
    CodatEvent,
    CompanyFacts,
    CompanyState,
    ConnectionFacts,
    ConnectionSnapshot,
    DataConnectionError,
    DataTypeFacts,
    DataTypeRead,
    LastError,
    ReadIssue,
)

# Any text, including "", non-ASCII and lone surrogates: the codec must not
# depend on what Codat puts in a name or an error message.
text = st.text(max_size=12)
maybe_text = st.none() | text
# Timestamps and ids as Codat sends them, plus arbitrary text for good measure.
timestamps = st.datetimes().map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.%fZ")) | text
maybe_timestamp = st.none() | timestamps
ids = st.uuids().map(str) | text


def tuples(strategy, max_size=2):
    return st.lists(strategy, max_size=max_size).map(tuple)


# (generatedDate, rank, event id); ranks include the inferred -1.
version_keys = st.tuples(timestamps, st.integers(-1, 3), ids)
maybe_key = st.none() | version_keys

issues = st.builds(ReadIssue, type=maybe_text, message=maybe_text)

data_type_facts = st.builds(
    DataTypeFacts,
    data_type=text,
    status=maybe_text,
    status_key=maybe_key,
    issues=tuples(issues),
    first_complete_at=maybe_timestamp,
    initial_read_at=maybe_timestamp,
    initial_complete_at=maybe_timestamp,
    modified_at=maybe_timestamp,
    error_status=maybe_text,
    error_key=maybe_key,
    error_issues=tuples(issues),
)

last_errors = st.builds(
    LastError,
    status_code=maybe_text,
    status_text=maybe_text,
    error_message=maybe_text,
    at=timestamps,
    event_id=ids,
)

connection_facts = st.builds(
    ConnectionFacts,
    id=ids,
    status=maybe_text,
    status_key=maybe_key,
    deleted_at=maybe_timestamp,
    ever_linked=st.booleans(),
    source_type=maybe_text,
    platform_key=maybe_text,
    platform_name=maybe_text,
    integration_id=maybe_text,
    created=maybe_timestamp,
    details_key=maybe_key,
    last_error=st.none() | last_errors,
    data_types=tuples(data_type_facts),
)

company_facts = st.builds(
    CompanyFacts,
    company_id=ids,
    name=maybe_text,
    description=maybe_text,
    name_key=maybe_key,
    connections=tuples(connection_facts),
    created_at=maybe_timestamp,
    deleted_at=maybe_timestamp,
)

history_entries = st.builds(
    HistoryEntry,
    from_state=st.sampled_from([s.value for s in CompanyState]),
    to_state=st.sampled_from([s.value for s in CompanyState]),
    at=timestamps,
    event_id=ids,
    event_type=text,
    generated_at=timestamps,
    synthetic=st.booleans(),
)

# The event log keeps what the state machine reads: a connection's sourceId
# and linkUrl are left out on purpose (event_to_log), so they are None here.
connection_snapshots = st.builds(
    ConnectionSnapshot,
    id=ids,
    status=maybe_text,
    source_type=maybe_text,
    platform_key=maybe_text,
    platform_name=maybe_text,
    integration_id=maybe_text,
    source_id=st.none(),
    link_url=st.none(),
    created=maybe_timestamp,
    errors=tuples(
        st.builds(
            DataConnectionError,
            status_code=maybe_text,
            status_text=maybe_text,
            error_message=maybe_text,
            errored_on=maybe_timestamp,
        )
    ),
)

reads = st.builds(
    DataTypeRead,
    connection_id=ids,
    data_type=text,
    status=maybe_text,
    records_modified=st.booleans(),
    issues=tuples(issues),
)


@st.composite
def codat_events(draw, company_id=None):
    synthetic = draw(st.booleans())
    return CodatEvent(
        id=draw(ids),
        type=draw(text),
        generated_at=draw(timestamps),
        company_id=company_id if company_id is not None else draw(ids),
        company_name=draw(maybe_text),
        company_description=draw(maybe_text),
        connection=draw(st.none() | connection_snapshots),
        data_types=draw(tuples(reads)),
        synthetic=synthetic,
        # Only a synthetic event's source is logged (a webhook's is implied).
        source=draw(text) if synthetic else "webhook",
    )


@st.composite
def company_records(draw):
    facts = draw(company_facts)
    events = draw(tuples(codat_events(facts.company_id)))
    return CompanyRecord(
        facts=facts,
        state=draw(st.sampled_from(list(CompanyState))),
        history=draw(tuples(history_entries)),
        first_seen_at=draw(timestamps),
        updated_at=draw(timestamps),
        first_ready_at=draw(maybe_timestamp),
        ready_connections=draw(st.none() | st.frozensets(ids, max_size=2)),
        events=tuple(event_to_log(e, draw(timestamps)) for e in events),
    )


def through_json(document):
    """What Redis gives back: the document after a JSON round trip."""
    return json.loads(json.dumps(document))


@settings(max_examples=60, deadline=None)
@given(company_facts)
def test_facts_survive_json(facts):
    assert facts_from_json(through_json(facts_to_json(facts))) == facts


@settings(max_examples=100, deadline=None)
@given(history_entries)
def test_history_entries_survive_json(entry):
    assert HistoryEntry.from_json(through_json(entry.to_json())) == entry


@settings(max_examples=100, deadline=None)
@given(codat_events(), timestamps)
def test_logged_events_replay_as_they_were_applied(event, applied_at):
    replayed, replayed_at = event_from_log(
        through_json(event_to_log(event, applied_at)), event.company_id
    )
    assert (replayed, replayed_at) == (event, applied_at)
    assert replayed.source == event.source  # not part of ==


@settings(max_examples=60, deadline=None)
@given(company_records())
def test_records_survive_encoding(record):
    raw = encode_record(record)
    assert decode_record(raw) == record
    assert json.loads(zlib.decompress(raw))["v"] == FORMAT_VERSION


@settings(max_examples=20, deadline=None)
@given(company_records())
def test_uncompressed_documents_still_read(record):
    """Documents written before compression are plain JSON starting with `{`."""
    plain = zlib.decompress(encode_record(record))
    assert decode_record(plain) == record
