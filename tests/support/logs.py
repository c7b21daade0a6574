"""What a process logs, for tests that read it: `configure_logging` pointed at a buffer."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager

from codat_authflow.logs import configure_logging


class LogCapture:
    """Every line logged from now on (at INFO and above), as parsed JSON."""

    def __init__(self) -> None:
        self.buffer = io.StringIO()
        configure_logging("INFO", stream=self.buffer)

    def lines(self, logger: str | None = None, *, start: int = 0) -> list[dict]:
        """Parsed lines (from character `start`); a line that is not JSON is
        `{"event": <text>, "_not_json": True}`, for tests that forbid them."""
        found = []
        # Lines end in "\n" only: str.splitlines() would also cut at U+0085 or
        # U+2028, which orjson writes unescaped inside strings (valid JSON).
        for line in filter(None, self.buffer.getvalue()[start:].split("\n")):
            try:
                parsed = json.loads(line)
            except ValueError:
                parsed = {"event": line, "_not_json": True}
            if logger is None or parsed.get("logger") == logger:
                found.append(parsed)
        return found

    @contextmanager
    def collect(self) -> Iterator[list[dict]]:
        """The lines logged inside the block, in the list yielded."""
        start = len(self.buffer.getvalue())
        found: list[dict] = []
        try:
            yield found
        finally:
            found.extend(self.lines(start=start))

    @property
    def text(self) -> str:
        return self.buffer.getvalue()

    def close(self) -> None:
        configure_logging("INFO")
