"""The ops pages in a real browser (headless Chromium) against a running stack
with real data: the RQ dashboard shows our queues, workers and a failed job,
and requeues it; the funnel page shows the numbers the webhooks produced;
without credentials both answer 401."""

from __future__ import annotations

import os
import time

import httpx
import pytest
import redis as redis_lib
from rq import Queue
from rq.job import Job

from tests.support.lifecycles import build
from tests.support.processes import TEST_API_TOKEN, TEST_WEBHOOK_SECRET
from tests.support.signing import encode_body, signed_headers

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
API = {"Authorization": f"Bearer {TEST_API_TOKEN}"}
KINDS = ("happy_path", "happy_path", "failed_only", "syncing", "revoked_after_ready")


def wait_for(predicate, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def send(base_url: str) -> list:
    lifecycles = [build(kind) for kind in KINDS]
    for life, _ in lifecycles:
        for body in life.events:
            raw = encode_body(body)
            response = httpx.post(
                f"{base_url}/webhooks/codat",
                content=raw,
                headers=signed_headers(TEST_WEBHOOK_SECRET, raw),
            )
            assert response.status_code == 202, response.text
    return lifecycles


def test_ops_pages_in_a_browser(running_stack, redis_url, browser, screenshots, tmp_path):
    base_url = running_stack.base_url
    conn = redis_lib.Redis.from_url(redis_url)
    lifecycles = send(base_url)

    def settled() -> bool:
        for life, expected in lifecycles:
            company = httpx.get(f"{base_url}/api/companies/{life.company_id}", headers=API)
            if company.json().get("state") != expected:
                return False
        return True

    wait_for(settled, what="every company in its final state")
    # A job that fails for real (its file is missing), to find and requeue in the dashboard.
    missing = tmp_path / "requeue-me"
    job = Queue("authflow", connection=conn).enqueue(
        os.remove, str(missing), description="e2e: remove a file that is not there yet"
    )
    wait_for(lambda: job.get_status() == "failed", what="the job to fail")

    # -- no credentials: 401 -------------------------------------------------------
    # A top-level navigation to a 401 makes Chromium want a password, which headless
    # Playwright reports as ERR_INVALID_AUTH_CREDENTIALS; the status itself is read
    # with the context's own HTTP client (a fetch() from the page would wait on the prompt).
    anonymous = browser.new_context()
    page = anonymous.new_page()
    for path in ("/ops/rq/", "/ops/funnel", "/ops/rq/0/data/queues.json", "/metrics"):
        response = anonymous.request.get(base_url + path)
        assert response.status == 401, path
        assert response.headers["www-authenticate"].startswith("Basic"), path
        assert "ops token" in response.text()
    for path in ("/ops/rq/", "/ops/funnel"):
        with pytest.raises(Exception, match="ERR_INVALID_AUTH_CREDENTIALS"):
            page.goto(base_url + path, timeout=10_000)
    anonymous.close()

    context = browser.new_context(
        http_credentials={"username": "ops", "password": TEST_API_TOKEN},
        viewport={"width": 1280, "height": 900},
    )
    page = context.new_page()
    offsite: list[str] = []
    page.on(
        "request",
        lambda r: offsite.append(r.url) if not r.url.startswith(base_url) else None,
    )

    # -- the RQ dashboard: queues -----------------------------------------------------
    assert page.goto(f"{base_url}/ops/rq/").status == 200
    page.wait_for_selector("tr[data-role=queue]")
    # Columns: queue, queued, deferred, scheduled, started, finished, failed, canceled.
    rows = {
        cells[0]: cells[1:]
        for cells in (r.split() for r in page.locator("tr[data-role=queue]").all_inner_texts())
    }
    assert "authflow" in rows
    assert rows["authflow"][5] == "1"  # the failed job
    assert int(rows["authflow"][4]) >= 1  # drain jobs that finished
    screenshots(page, "rq-queues")

    # -- workers -----------------------------------------------------------------------
    page.goto(f"{base_url}/ops/rq/0/view/workers")
    page.wait_for_selector("tr[data-role=worker]")
    assert page.locator("tr[data-role=worker]").count() == 2
    screenshots(page, "rq-workers")

    # -- the failed job, requeued from the page --------------------------------------------
    page.goto(f"{base_url}/ops/rq/0/view/jobs/authflow/failed/8/asc/1")
    row = page.locator(f"tr[data-job-id='{job.id}']")
    row.wait_for()
    assert "remove a file that is not there yet" in row.inner_text()
    screenshots(page, "rq-failed-job")
    missing.write_text("now it exists")
    row.locator("[data-role=requeue-job-btn]").click()
    wait_for(
        lambda: Job.fetch(job.id, connection=conn).get_status() == "finished",
        what="the requeued job to finish",
    )
    assert not missing.exists()

    # -- the funnel ---------------------------------------------------------------------------
    assert page.goto(f"{base_url}/ops/funnel").status == 200
    bars = {
        bar.get_attribute("data-step"): int(bar.get_attribute("data-companies"))
        for bar in page.locator("#funnel-chart g.bar").all()
    }
    assert bars == {"created": 5, "linking": 5, "linked": 4, "ready": 3}
    steps = page.locator("#funnel-steps tbody tr").all_inner_texts()
    assert steps[3].split()[:2] == ["ready", "3"] and "60.0%" in steps[3]
    assert "1 revoked" in page.locator("#funnel-revoked").inner_text()
    assert page.locator("#connection-failures").count() == 1
    screenshots(page, "funnel")

    # Filtered by source type, through the form.
    page.fill("input[name=sourceType]", "Accounting")
    page.click("button[type=submit]")
    page.wait_for_url("**sourceType=Accounting**")
    assert (
        page.locator("#funnel-chart g.bar[data-step=created]").get_attribute("data-companies")
        == "5"
    )
    assert offsite == [], f"the pages asked for something outside the app: {offsite}"
    context.close()
