"""Posting the plan like Codat (Svix) does: signed at send time, re-sent with
the same webhook-id until a 2xx (`Poster`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from perf.soak.config import POST_GIVE_UP_SECONDS, POST_MAX_ATTEMPTS, POST_TIMEOUT_SECONDS
from perf.soak.plan import Post
from tests.support.signing import signed_headers


@dataclass
class PostOutcome:
    webhook_id: str
    copy: int
    status: int | None  # the final answer (200/202), or the last one if we gave up
    attempts: int
    retried_statuses: tuple[str, ...]  # answers that made us retry (503, timeouts...)
    acked_at: float | None  # monotonic time of the 2xx


class Poster:
    """Posts the plan's deliveries like Codat (Svix) does: signed at send
    time, re-sent with the same webhook-id until a 2xx, spread over
    ``duration`` seconds by ``concurrency`` threads."""

    def __init__(self, base_url: str, secret: str, concurrency: int, duration: float):
        self.base_url = base_url
        self.secret = secret
        self.concurrency = concurrency
        self.duration = duration
        self.outcomes: list[PostOutcome] = []
        self._lock = threading.Lock()
        self._next = 0
        self.done = threading.Event()
        self.started_at = 0.0
        self.finished_at = 0.0
        self.stop = threading.Event()

    def start(self, posts: Sequence[Post]) -> threading.Thread:
        thread = threading.Thread(target=self._run, args=(posts,), name="soak-poster", daemon=True)
        self.started_at = time.monotonic()
        thread.start()
        return thread

    def _run(self, posts: Sequence[Post]) -> None:
        interval = self.duration / max(1, len(posts))
        try:
            with ThreadPoolExecutor(self.concurrency, thread_name_prefix="soak-post") as pool:
                for _ in range(self.concurrency):
                    pool.submit(self._worker, posts, interval)
        finally:
            self.finished_at = time.monotonic()
            self.done.set()

    def _take(self, total: int) -> int | None:
        with self._lock:
            if self._next >= total:
                return None
            index = self._next
            self._next += 1
            return index

    def _worker(self, posts: Sequence[Post], interval: float) -> None:
        with httpx.Client(
            base_url=self.base_url, timeout=POST_TIMEOUT_SECONDS, trust_env=False
        ) as client:
            while not self.stop.is_set():
                index = self._take(len(posts))
                if index is None:
                    return
                delay = self.started_at + index * interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                outcome = self._post(client, posts[index])
                with self._lock:
                    self.outcomes.append(outcome)

    def _post(self, client: httpx.Client, post: Post) -> PostOutcome:
        give_up_at = time.monotonic() + POST_GIVE_UP_SECONDS
        pause = 0.1
        retried: list[str] = []
        status: int | None = None
        for attempt in range(1, POST_MAX_ATTEMPTS + 1):
            headers = signed_headers(self.secret, post.body, webhook_id=post.webhook_id)
            try:
                status = client.post(
                    "/webhooks/codat", content=post.body, headers=headers
                ).status_code
            except httpx.HTTPError as exc:
                status = None
                retried.append(type(exc).__name__)
            else:
                if status in (200, 202):
                    return PostOutcome(
                        post.webhook_id,
                        post.copy,
                        status,
                        attempt,
                        tuple(retried),
                        time.monotonic(),
                    )
                retried.append(str(status))
                if 400 <= status < 500 and status not in (408, 429):
                    break  # our deliveries are valid: a 4xx is a bug, retrying will not help
            if time.monotonic() > give_up_at or self.stop.is_set():
                break
            time.sleep(pause)
            pause = min(pause * 2, 2.0)
        return PostOutcome(post.webhook_id, post.copy, status, attempt, tuple(retried), None)
