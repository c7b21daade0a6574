"""Verifying Codat's webhook signatures (Svix / Standard Webhooks).

The check itself is the `svix` library's, the one Codat tells its customers to
use: HMAC-SHA256 over `{id}.{timestamp}.{body}`, constant-time comparison,
timestamps more than 5 minutes from now rejected, `svix-` and `webhook-`
header prefixes both accepted, several space-separated `v1,` signatures
allowed. This module adds what a service needs around it: several secrets at
once (rotation without downtime), and a reason for each failure, so metrics
and logs can tell a stale timestamp from a forged signature.
"""

from __future__ import annotations

import binascii
import hmac
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from svix.webhooks import Webhook, WebhookVerificationError

HEADER_NAMES = (
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "svix-id",
    "svix-timestamp",
    "svix-signature",
)


class SignatureRejected(Exception):
    """`reason` is one of: missing_headers, stale, bad_signature."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


def webhook_id_of(headers: Mapping[str, str]) -> str:
    return headers.get("svix-id") or headers.get("webhook-id") or ""


class SignatureVerifier:
    def __init__(self, secrets: Iterable[str]):
        self._webhooks = [Webhook(secret) for secret in secrets]
        if not self._webhooks:
            raise ValueError("at least one webhook secret is required")

    def verify(self, body: bytes, headers: dict[str, str]) -> None:
        """Return if any configured secret signed `body`; raise `SignatureRejected`."""
        if (
            not webhook_id_of(headers)
            or not (headers.get("svix-timestamp") or headers.get("webhook-timestamp"))
            or not (headers.get("svix-signature") or headers.get("webhook-signature"))
        ):
            raise SignatureRejected(
                "missing_headers",
                "webhook-id, webhook-timestamp and webhook-signature headers are required "
                "(or their svix- equivalents)",
            )
        failure: SignatureRejected | None = None
        for webhook in self._webhooks:
            try:
                webhook.verify(body, headers)  # svix reads them into a dict of its own
                return
            except WebhookVerificationError as exc:
                failure = _classify(str(exc))
                if failure.reason == "stale" and not self._signed(body, headers):
                    # svix checks the time first; the signature decides what we call it.
                    failure = SignatureRejected(
                        "bad_signature", "no signature matches any configured secret"
                    )
                if failure.reason == "stale":
                    raise failure from None  # the same for every secret
            except (ValueError, binascii.Error, UnicodeDecodeError):
                # Malformed signature entries or a body that is not UTF-8: the
                # library raises these instead of its own error.
                failure = SignatureRejected("bad_signature", "malformed signature or body")
        assert failure is not None
        raise failure

    def _signed(self, body: bytes, headers: Mapping[str, str]) -> bool:
        """Whether any secret signed `body` with these headers, whatever their time."""
        try:
            stamp = int(headers.get("svix-timestamp") or headers.get("webhook-timestamp") or "")
            moment = datetime.fromtimestamp(stamp, tz=UTC)
            given = (
                headers.get("svix-signature") or headers.get("webhook-signature") or ""
            ).split()
            for webhook in self._webhooks:
                expected = webhook.sign(webhook_id_of(headers), moment, body.decode())
                # Bytes: compare_digest refuses str with non-ASCII characters.
                expected_bytes = expected.encode()
                if any(
                    hmac.compare_digest(expected_bytes, sig.encode("utf-8", "surrogateescape"))
                    for sig in given
                ):
                    return True
        except (ValueError, OverflowError, OSError, binascii.Error, UnicodeDecodeError):
            return False
        return False


def _classify(message: str) -> SignatureRejected:
    if "timestamp too old" in message or "timestamp too new" in message:
        return SignatureRejected("stale", "webhook-timestamp is more than 5 minutes from now")
    if "Missing required headers" in message:
        return SignatureRejected("missing_headers", "signature headers are missing")
    if "Invalid Signature Headers" in message:
        return SignatureRejected("bad_signature", "webhook-timestamp is not a Unix timestamp")
    return SignatureRejected("bad_signature", "no signature matches any configured secret")
