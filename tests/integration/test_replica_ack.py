"""REDIS_MIN_REPLICAS_ACK against a real Redis (fakeredis has no WAIT): the
receiver's 2xx waits for a replica; without one in time it answers 503,
and the retry (a duplicate by then) waits again."""

from __future__ import annotations

import time

import redis as redis_lib

from app import create_app
from tests.support.lifecycles import Lifecycle
from tests.support.processes import TEST_WEBHOOK_SECRET, app_env, start_redis
from tests.support.signing import encode_body, signed_headers


def _post(client, raw: bytes, webhook_id: str):
    headers = signed_headers(TEST_WEBHOOK_SECRET, raw, webhook_id=webhook_id)
    return client.post("/webhooks/codat", data=raw, headers=headers, buffered=True)


def _counter(conn, name: str, field: str = "_") -> int:
    return int(conn.hget(f"authflow:metrics:counter:{name}", field) or 0)


def _outcomes(conn) -> dict[str, int]:
    counted = conn.hgetall("authflow:metrics:counter:authflow_webhooks_received")
    return {k.decode(): int(v) for k, v in counted.items() if int(v)}


def test_no_replica_in_time_is_503_and_a_replica_makes_it_a_2xx(redis_server, redis_url, tmp_path):
    env = app_env(redis_url, REDIS_MIN_REPLICAS_ACK="1", REDIS_REPLICA_ACK_TIMEOUT_MS="500")
    client = create_app(env).test_client()
    conn = redis_lib.Redis.from_url(redis_url)
    raw = encode_body(Lifecycle().company("company.created"))

    refused = _post(client, raw, "msg_replica_ack_1")
    assert refused.status_code == 503, refused.json
    assert refused.json["error"]["code"] == "storage_unavailable"
    assert conn.xlen("authflow:inbox") == 1  # stored on the primary all the same
    assert _counter(conn, "authflow_webhooks_unreplicated") == 1
    assert _outcomes(conn) == {"unavailable": 1}  # counted as what Codat was told, a 503

    conn.config_set("repl-diskless-sync-delay", 0)  # sync the replica now, not in 5 s
    replica = start_redis(
        tmp_path / "replica", config={"replicaof": f"127.0.0.1 {redis_server.port}"}
    )
    try:
        with redis_lib.Redis.from_url(replica.url) as replica_conn:
            deadline = time.monotonic() + 10
            while replica_conn.info("replication")["master_link_status"] != "up":
                assert time.monotonic() < deadline, "the replica did not sync"
                time.sleep(0.1)
        # The replica's link is up before the primary has its first ACK: wait
        # for an ACK covering everything written so far, so the app's WAIT
        # below is not a race with the sync. WAIT counts replicas that have
        # acknowledged this connection's own last write: without a write of
        # its own it returns at once, having waited for nothing (that let the
        # app's 500 ms WAIT race a replica still busy after its sync, in CI).
        conn.set("test:replica-barrier", "1")
        assert conn.wait(1, 10_000) == 1, "the primary never saw the replica's ACK"
        # The same setting with more room: on a loaded CI machine a replica's
        # acknowledgement has taken over 500 ms. WAIT returns at the ACK.
        patient = {**env, "REDIS_REPLICA_ACK_TIMEOUT_MS": "10000"}
        client = create_app(patient).test_client()
        retried = _post(client, raw, "msg_replica_ack_1")  # Codat's retry
        assert retried.status_code == 200 and retried.json["status"] == "duplicate"
        fresh = _post(client, encode_body(Lifecycle().company("company.created")), "msg_2")
        assert fresh.status_code == 202, fresh.json
        assert _counter(conn, "authflow_webhooks_unreplicated") == 1
        assert _outcomes(conn) == {"unavailable": 1, "duplicate": 1, "queued": 1}
    finally:
        replica.close()
