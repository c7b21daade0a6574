"""Signing webhooks the way Codat (through Svix) does, with the `svix` library."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from svix.webhooks import Webhook


def encode_body(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def signed_headers(
    secret: str,
    body: bytes,
    *,
    webhook_id: str | None = None,
    timestamp: datetime | None = None,
    prefix: str = "webhook",
) -> dict[str, str]:
    """Headers of a Svix delivery of `body`: id, timestamp, `v1,` signature."""
    webhook_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    timestamp = timestamp or datetime.now(UTC)
    signature = Webhook(secret).sign(webhook_id, timestamp, body.decode())
    return {
        f"{prefix}-id": webhook_id,
        f"{prefix}-timestamp": str(int(timestamp.timestamp())),
        f"{prefix}-signature": signature,
        "Content-Type": "application/json",
    }
