"""The reconciliation index, maintained by CompanyUpdates.apply's hook."""

from __future__ import annotations

import fakeredis
import pytest

from codat_authflow.company_updates import CompanyUpdates
from codat_authflow.storage.companies import CompanyStore
from codat_authflow.storage.keys import Keys
from codat_authflow.storage.reconciliation import ReconciliationIndex, index_key, stamp_epoch
from state_machine import CompanyState, parse_codat_event
from tests.support.lifecycles import Lifecycle, new_connection

KEYS = Keys("authflow")


@pytest.fixture
def store():
    return CompanyStore(fakeredis.FakeRedis(), KEYS)


@pytest.fixture
def index(store):
    return ReconciliationIndex(store.redis, KEYS)


def apply(store, life, bodies, stamp):
    CompanyUpdates(store).apply(
        {life.company_id: [parse_codat_event(b) for b in bodies]}, now=lambda: stamp
    )


def scores(store, company_id):
    return {
        state: store.redis.zscore(index_key(KEYS, state), company_id)
        for state in ("linking", "linked", "syncing")
    }


def test_entering_a_state_starts_its_clock_and_staying_keeps_it(store):
    life, connection, other = Lifecycle(), new_connection(), new_connection("Banking")
    apply(store, life, [life.company("company.created")], "2026-01-05T09:00:00.000000Z")
    assert scores(store, life.company_id) == {"linking": None, "linked": None, "syncing": None}
    apply(store, life, [life.connection("connection.created", connection)],
          "2026-01-05T09:01:00.000000Z")  # fmt: skip
    started = stamp_epoch("2026-01-05T09:01:00.000000Z")
    assert scores(store, life.company_id)["linking"] == started
    apply(store, life, [life.connection("connection.created", other)],
          "2026-01-05T09:30:00.000000Z")  # fmt: skip
    assert scores(store, life.company_id)["linking"] == started, "same state: clock runs on"


def test_moving_on_moves_the_entry_and_leaving_removes_it(store):
    life, connection = Lifecycle(), new_connection()
    apply(store, life, [life.connection("connection.created", connection)],
          "2026-01-05T09:00:00.000000Z")  # fmt: skip
    apply(store, life, [life.connection("connection.connected", connection)],
          "2026-01-05T09:10:00.000000Z")  # fmt: skip
    assert scores(store, life.company_id) == {
        "linking": None, "linked": stamp_epoch("2026-01-05T09:10:00.000000Z"), "syncing": None
    }  # fmt: skip
    apply(store, life, [life.read("read.completed", connection)], "2026-01-05T09:20:00.000000Z")
    assert scores(store, life.company_id)["syncing"] == stamp_epoch("2026-01-05T09:20:00.000000Z")
    apply(store, life, [life.read("read.completed.initial", connection)],
          "2026-01-05T09:30:00.000000Z")  # fmt: skip
    assert scores(store, life.company_id) == {"linking": None, "linked": None, "syncing": None}


def test_due_companies_come_longest_waiting_first_and_only_when_due(store, index):
    lives = [Lifecycle() for _ in range(3)]
    for minute, life in zip((5, 1, 3), lives, strict=True):
        apply(store, life, [life.connection("connection.created", new_connection())],
              f"2026-01-05T09:0{minute}:00.000000Z")  # fmt: skip
    cutoff = stamp_epoch("2026-01-05T09:04:00.000000Z")
    assert index.due(CompanyState.LINKING, cutoff, 10) == [lives[1].company_id, lives[2].company_id]
    assert index.due(CompanyState.LINKING, cutoff, 1) == [lives[1].company_id]
    index.restart(lives[1].company_id, CompanyState.LINKING, cutoff + 3600)
    assert index.due(CompanyState.LINKING, cutoff, 10) == [lives[2].company_id]
    index.restart(lives[2].company_id, CompanyState.LINKED, cutoff)  # not there: no-op
    assert index.started(lives[2].company_id, CompanyState.LINKED) is None
    assert index.sizes() == {"linking": 3, "linked": 0, "syncing": 0}


def test_rebuild_indexes_what_predates_the_index_without_resetting_clocks(store, index):
    life = Lifecycle()
    apply(store, life, [life.connection("connection.created", new_connection())],
          "2026-01-05T09:00:00.000000Z")  # fmt: skip
    count = index.rebuild(
        [
            (life.company_id, CompanyState.LINKING, "2026-02-01T00:00:00.000000Z"),
            ("c-ready", CompanyState.READY, "2026-02-01T00:00:00.000000Z"),
            ("c-old", CompanyState.SYNCING, "2026-02-01T00:00:00.000000Z"),
        ]
    )
    assert count == 2
    assert index.started(life.company_id, CompanyState.LINKING) == stamp_epoch(
        "2026-01-05T09:00:00.000000Z"
    )
    assert index.started("c-old", CompanyState.SYNCING) == stamp_epoch(
        "2026-02-01T00:00:00.000000Z"
    )
    index.remove("c-old")
    assert index.sizes()["syncing"] == 0
