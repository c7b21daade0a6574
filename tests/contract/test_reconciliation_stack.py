"""End to end with real processes: gunicorn, an RQ worker, the RQ cron clock,
a private Redis and Prism as Codat. `connection.connected` and
`read.completed.initial` are never delivered; the scheduled reconciliation
alone brings the company to `ready`."""

from __future__ import annotations

import sys
import time

import httpx
import pytest

from tests.contract.conftest import TEST_CODAT_KEY
from tests.support.lifecycles import Connection, Lifecycle
from tests.support.processes import TEST_API_TOKEN, TEST_WEBHOOK_SECRET, start_process, start_stack
from tests.support.signing import encode_body, signed_headers

pytestmark = [pytest.mark.integration, pytest.mark.contract]

AUTH = {"Authorization": f"Bearer {TEST_API_TOKEN}"}
BASIQ = Connection("ee2eb431-c0fa-4dc9-93fa-d29781c12bcd", "Banking", "dfxm", "Basiq")


def wait_for_state(client, company_id, state, timeout=30.0):
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        response = client.get(f"/api/companies/{company_id}")
        if response.status_code == 200:
            seen = response.json()
            if seen["state"] == state:
                return seen
        time.sleep(0.2)
    raise AssertionError(f"company never reached {state!r}; last seen: {seen}")


def test_scheduled_reconciliation_alone_brings_a_company_to_ready(stack_env, prism, tmp_path):
    env = {
        **stack_env,
        "CODAT_API_KEY": TEST_CODAT_KEY,
        "CODAT_BASE_URL": prism.url,
        "RECONCILE_LINKING_AFTER_SECONDS": "1",
        "RECONCILE_LINKED_AFTER_SECONDS": "1",
        "RECONCILE_SYNCING_AFTER_SECONDS": "1",
        "RECONCILE_INTERVAL_SECONDS": "1",
    }
    stack = start_stack(env, web_workers=1, rq_workers=1, log_dir=tmp_path)
    clock = start_process(
        [sys.executable, "-m", "workers.clock"], env, name="clock", log_dir=tmp_path
    )
    try:
        with httpx.Client(base_url=stack.base_url, headers=AUTH, timeout=15) as client:
            # The host creates the company when the customer signs up.
            created = client.post("/api/companies", json={"name": "customer-e2e"})
            assert created.status_code == 201, created.text
            company_id = created.json()["companyId"]
            assert created.json()["state"] == "created"

            # Codat's connection.created arrives; nothing after it ever will.
            life = Lifecycle(company_id=company_id)
            raw = encode_body(life.connection("connection.created", BASIQ))
            delivered = client.post(
                "/webhooks/codat", content=raw, headers=signed_headers(TEST_WEBHOOK_SECRET, raw)
            )
            assert delivered.status_code == 202
            wait_for_state(client, company_id, "linking", timeout=15)

            company = wait_for_state(client, company_id, "ready")
    finally:
        clock.stop()
        stack.stop()

    transitions = [(h["from"], h["to"], h.get("synthetic", False)) for h in company["history"]]
    assert transitions == [
        ("created", "linking", False),  # the webhook
        ("linking", "linked", True),  # reconciliation: list-connections says Linked
        ("linked", "ready", True),  # reconciliation: every data type's fetch is Complete
    ]
    assert all(h["eventId"].startswith("reconciliation:") for h in company["history"][1:])
    worker_logs = "".join(p.read_text() for p in tmp_path.glob("worker-*.std*"))
    assert "reconcile.company" in worker_logs
