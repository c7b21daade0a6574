"""Connect links: `{CONNECT_BASE_URL}/connect/<token>`.

A token is an itsdangerous signature (HMAC-SHA1 by default, keyed with
`CONNECT_SECRET`, or a key derived from `API_TOKEN` when it is unset) over
`{"c": companyId, "i": linkId, "v": version, "e": expiresAt}`. It opens that
company's pages and nothing else, until `expiresAt`
(`CONNECT_LINK_LIFETIME_SECONDS`, 7 days by default), unless it is revoked:

* one link: `{p}:connect:revoked:{linkId}` exists (kept until the link would
  have expired anyway);
* every link of a company: the company's version
  (`{p}:connect:version:{companyId}`) was bumped past the token's.

The pages never see the API token. Their forms carry a CSRF token bound to
the link and to a random value in a cookie (double submit, signed), so a
form posted from another site, or without the cookie, is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from itsdangerous import BadSignature, SignatureExpired, URLSafeSerializer, URLSafeTimedSerializer
from redis import Redis

from codat_authflow.settings import Settings
from codat_authflow.storage.keys import Keys

LINK_SALT = "codat-authflow.connect-link"
CSRF_SALT = "codat-authflow.connect-csrf"
RETURN_SALT = "codat-authflow.connect-return"
#: A form must be posted within this time of the page that holds it.
CSRF_MAX_AGE_SECONDS = 4 * 3600
#: The signed cookie that tells /link/callback which connect link the customer
#: came from: at most as long as a Link URL lives (one day).
RETURN_MAX_AGE_SECONDS = 24 * 3600


class InvalidLink(Exception):
    """A connect token that opens nothing: `reason` is tampered, expired,
    revoked or unknown_company."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class CsrfError(Exception):
    """A form without a valid CSRF token for this link and this browser."""


@dataclass(frozen=True)
class ConnectLink:
    company_id: str
    link_id: str
    version: int
    expires_at: int  # epoch seconds
    token: str


def derive_secret(settings: Settings) -> str:
    """CONNECT_SECRET, or a key derived from API_TOKEN (so links work on day
    one; rotating API_TOKEN then invalidates every link)."""
    if settings.connect_secret:
        return settings.connect_secret
    return hmac.new(
        settings.api_token.encode(), b"codat-authflow connect links", hashlib.sha256
    ).hexdigest()


class ConnectLinks:
    def __init__(
        self,
        settings: Settings,
        redis: Redis,
        keys: Keys,
        *,
        clock: Callable[[], float] = time.time,
    ):
        self.settings = settings
        self.redis = redis
        self.keys = keys
        self.clock = clock
        secret = derive_secret(settings)
        self._links = URLSafeSerializer(secret, salt=LINK_SALT)
        self._csrf = URLSafeTimedSerializer(secret, salt=CSRF_SALT)
        self._return = URLSafeTimedSerializer(secret, salt=RETURN_SALT)

    # -- links -------------------------------------------------------------------

    def version(self, company_id: str) -> int:
        raw = self.redis.get(self.keys.connect_version(company_id))
        return int(raw) if raw is not None else 0

    def issue(self, company_id: str) -> ConnectLink:
        link_id = secrets.token_urlsafe(12)
        expires_at = int(self.clock()) + self.settings.connect_link_lifetime_seconds
        version = self.version(company_id)
        token = self._links.dumps({"c": company_id, "i": link_id, "v": version, "e": expires_at})
        return ConnectLink(company_id, link_id, version, expires_at, token)

    def unsigned_link_id(self, token: str) -> str | None:
        """The link id of a well-signed token, expired or not (rate-limit keys)."""
        try:
            payload = self._links.loads(token)
        except BadSignature:
            return None
        return payload.get("i") if isinstance(payload, dict) else None

    def open(self, token: str) -> ConnectLink:
        """The link `token` stands for, or InvalidLink."""
        try:
            payload = self._links.loads(token)
        except BadSignature as exc:
            raise InvalidLink("tampered") from exc
        if not isinstance(payload, dict):
            raise InvalidLink("tampered")
        try:
            link = ConnectLink(
                str(payload["c"]), str(payload["i"]), int(payload["v"]), int(payload["e"]), token
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidLink("tampered") from exc
        if self.clock() >= link.expires_at:
            raise InvalidLink("expired")
        if link.version != self.version(link.company_id) or self.redis.exists(
            self.keys.connect_revoked(link.link_id)
        ):
            raise InvalidLink("revoked")
        return link

    def revoke(self, link_id: str) -> None:
        """Revoke one link (kept as long as any link could still be valid)."""
        self.redis.set(
            self.keys.connect_revoked(link_id),
            "1",
            ex=self.settings.connect_link_lifetime_seconds,
        )

    def revoke_all(self, company_id: str) -> int:
        """Revoke every link issued for the company so far; the new version."""
        return int(self.redis.incr(self.keys.connect_version(company_id)))

    # -- CSRF --------------------------------------------------------------------

    @staticmethod
    def new_browser_secret() -> str:
        """The random value kept in the CSRF cookie."""
        return secrets.token_urlsafe(24)

    @staticmethod
    def _bind(browser_secret: str) -> str:
        return hashlib.sha256(browser_secret.encode()).hexdigest()[:32]

    def csrf_token(self, link: ConnectLink, browser_secret: str) -> str:
        return self._csrf.dumps({"i": link.link_id, "b": self._bind(browser_secret)})

    def check_csrf(self, link: ConnectLink, browser_secret: str | None, token: str | None) -> None:
        if not browser_secret or not token:
            raise CsrfError("missing")
        try:
            payload = self._csrf.loads(token, max_age=CSRF_MAX_AGE_SECONDS)
        except SignatureExpired as exc:
            raise CsrfError("expired") from exc
        except BadSignature as exc:
            raise CsrfError("tampered") from exc
        if not isinstance(payload, dict) or not (
            hmac.compare_digest(str(payload.get("i")), link.link_id)
            and hmac.compare_digest(str(payload.get("b")), self._bind(browser_secret))
        ):
            raise CsrfError("mismatch")

    # -- the way back from Link ----------------------------------------------------

    def return_cookie(self, link: ConnectLink) -> str:
        return self._return.dumps({"t": link.token})

    def from_return_cookie(self, value: str | None) -> ConnectLink | None:
        """The (still valid) link a /link/callback visitor came from, if any."""
        if not value:
            return None
        try:
            payload = self._return.loads(value, max_age=RETURN_MAX_AGE_SECONDS)
        except BadSignature:
            return None
        if not isinstance(payload, dict) or not isinstance(payload.get("t"), str):
            return None
        try:
            return self.open(payload["t"])
        except InvalidLink:
            return None
