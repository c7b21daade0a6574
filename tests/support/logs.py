"""What a process logs, for tests that read it: `configure_logging` pointed at a buffer."""

from __future__ import annotations

import io
import json

from codat_authflow.logs import configure_logging


class LogCapture:
    """Every line logged from now on (at INFO and above), as parsed JSON."""

    def __init__(self) -> None:
        self.buffer = io.StringIO()
        configure_logging("INFO", stream=self.buffer)

    def lines(self, logger: str | None = None) -> list[dict]:
        found = []
        for line in self.buffer.getvalue().splitlines():
            parsed = json.loads(line)
            if logger is None or parsed.get("logger") == logger:
                found.append(parsed)
        return found

    @property
    def text(self) -> str:
        return self.buffer.getvalue()

    def close(self) -> None:
        configure_logging("INFO")
