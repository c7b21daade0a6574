"""Every Redis key name of ours, in one place, all under one prefix (`KEY_PREFIX`).

Inbox and outbox (`storage.inbox`, `storage.outbox`, the drain):
  `{p}:seen:{webhookId}` (string, TTL 72 h), `{p}:inbox` (stream),
  `{p}:inbox:drain-scheduled` (string, TTL), `{p}:inbox:dead` (stream),
  `{p}:outbox` and `{p}:outbox:dead` (streams), `{p}:events:ignored` (stream),
  `{p}:stats:ignored` (hash).
Companies (`storage.companies`, `company_updates`, `storage.reconciliation`,
`storage.funnel`, `journey.reconcile`, `journey.refresh`):
  `{p}:company:{id}` (the document), `{p}:stats:states` (hash),
  `{p}:reconcile:{state}` (sorted set), `{p}:reconcile:lock:{id}` (string, TTL),
  `{p}:reconcile:stuck` (hash), `{p}:reconcile:refresh:{id}` (hash, TTL 7 d),
  `{p}:funnel:first-seen` (sorted set), `{p}:tombstones` (hash: erased company
  id -> when, `journey.erasure`; events for them are acknowledged and dropped).
The journey (`journey.link_callback`, `journey.companies`, `journey.integrations`):
  `{p}:link:outcomes:{id}` (hash, TTL 30 d, at most 50 fields),
  `{p}:link:checked:{connectionId}` (string, TTL 5 s),
  `{p}:link:checks:company:{id}:{window}` and `{p}:link:checks:all:{window}`
  (counters, TTL 2 windows), `{p}:ratelimit...` (flask-limiter's, TTL),
  `{p}:companies:by-name:{name}` and `{p}:companies:by-customer:{customerId}` (strings),
  `{p}:companies:marker-of:{id}` (string: which of those points at the company),
  `{p}:cache:integration:{key}` and `{p}:cache:branding:{key}` (strings, TTL),
  `{p}:codat:rate-limit` (hash, TTL 8 d: the pause of reconciliation while
  Codat's rate limit is reached, `journey.rate_limit`).
The connect pages (`connect.links`, `connect.pages`):
  `{p}:connect:version:{id}` (counter), `{p}:connect:revoked:{linkId}` (string,
  TTL until the link expires), `{p}:connect:actions:{id}` (list, at most 50),
  `{p}:cache:connect-integrations:{sourceType}` (string, TTL).
Subscriptions and deliveries (`storage.subscriptions`, `storage.deliveries`):
  `{p}:subscription:{id}` (hash), `{p}:subscriptions` (sorted set),
  `{p}:delivery:{id}` (hash), `{p}:subscription:{id}:deliveries`,
  `{p}:deliveries:dead` and `{p}:deliveries:pending` (sorted sets; the pending
  one is the delivery schedule), `{p}:deliveries:started` (hash: delivery id ->
  when its attempt was claimed), `{p}:deliveries:pump-scheduled` and
  `{p}:deliveries:pump-wakeup` (strings, TTL),
  `{p}:subscription:{id}` also holds the circuit breaker's fields.
Metrics (`observability.metrics`):
  `{p}:metrics:counter:{name}` and `{p}:metrics:histogram:{name}` (hashes).

RQ's own keys (`rq:*`) are RQ's.
"""

from __future__ import annotations

from dataclasses import dataclass

INBOX_GROUP = "workers"
OUTBOX_GROUP = "relay"


@dataclass(frozen=True)
class Keys:
    prefix: str = "authflow"

    # -- the inbox and the outbox -------------------------------------------------

    def seen(self, webhook_id: str) -> str:
        return f"{self.prefix}:seen:{webhook_id}"

    @property
    def inbox(self) -> str:
        return f"{self.prefix}:inbox"

    @property
    def drain_scheduled(self) -> str:
        return f"{self.prefix}:inbox:drain-scheduled"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}:inbox:dead"

    @property
    def outbox(self) -> str:
        return f"{self.prefix}:outbox"

    @property
    def outbox_dead_letters(self) -> str:
        return f"{self.prefix}:outbox:dead"

    @property
    def ignored_events(self) -> str:
        return f"{self.prefix}:events:ignored"

    # -- companies ----------------------------------------------------------------

    def company(self, company_id: str) -> str:
        return f"{self.prefix}:company:{company_id}"

    @property
    def state_counts(self) -> str:
        return f"{self.prefix}:stats:states"

    @property
    def ignored_counts(self) -> str:
        return f"{self.prefix}:stats:ignored"

    def reconcile_index(self, state: str) -> str:
        return f"{self.prefix}:reconcile:{state}"

    def reconcile_lock(self, company_id: str) -> str:
        return f"{self.prefix}:reconcile:lock:{company_id}"

    @property
    def reconcile_stuck(self) -> str:
        return f"{self.prefix}:reconcile:stuck"

    @property
    def tombstones(self) -> str:
        return f"{self.prefix}:tombstones"

    def refresh_tries(self, company_id: str) -> str:
        return f"{self.prefix}:reconcile:refresh:{company_id}"

    @property
    def funnel_first_seen(self) -> str:
        return f"{self.prefix}:funnel:first-seen"

    # -- the journey --------------------------------------------------------------

    def link_outcomes(self, company_id: str) -> str:
        return f"{self.prefix}:link:outcomes:{company_id}"

    def link_checked(self, connection_id: str) -> str:
        return f"{self.prefix}:link:checked:{connection_id}"

    def link_checks_company(self, company_id: str, window: int) -> str:
        return f"{self.prefix}:link:checks:company:{company_id}:{window}"

    def link_checks_all(self, window: int) -> str:
        return f"{self.prefix}:link:checks:all:{window}"

    @property
    def rate_limit_prefix(self) -> str:
        """flask-limiter's keys (app/rate_limits.py) all start with this."""
        return f"{self.prefix}:ratelimit"

    def company_by_name(self, name: str) -> str:
        return f"{self.prefix}:companies:by-name:{name}"

    def company_by_customer(self, customer_id: str) -> str:
        return f"{self.prefix}:companies:by-customer:{customer_id}"

    def company_marker(self, company_id: str) -> str:
        return f"{self.prefix}:companies:marker-of:{company_id}"

    def integration_cache(self, platform_key: str) -> str:
        return f"{self.prefix}:cache:integration:{platform_key}"

    def branding_cache(self, platform_key: str) -> str:
        return f"{self.prefix}:cache:branding:{platform_key}"

    @property
    def codat_rate_limit(self) -> str:
        return f"{self.prefix}:codat:rate-limit"

    # -- the connect pages (codat_authflow.connect) -------------------------------

    def connect_version(self, company_id: str) -> str:
        """The company's connect-link version: bumping it revokes every link."""
        return f"{self.prefix}:connect:version:{company_id}"

    def connect_revoked(self, link_id: str) -> str:
        """One revoked connect link (TTL: until the link would have expired)."""
        return f"{self.prefix}:connect:revoked:{link_id}"

    def connect_actions(self, company_id: str) -> str:
        """What the customer did on the connect pages (list, newest first, capped)."""
        return f"{self.prefix}:connect:actions:{company_id}"

    def connect_integrations(self, source_type: str) -> str:
        """Enabled integrations of one source type (cached like branding)."""
        return f"{self.prefix}:cache:connect-integrations:{source_type}"

    # -- subscriptions and deliveries ---------------------------------------------

    def subscription(self, subscription_id: str) -> str:
        return f"{self.prefix}:subscription:{subscription_id}"

    @property
    def subscriptions(self) -> str:
        return f"{self.prefix}:subscriptions"

    def delivery(self, delivery_id: str) -> str:
        return f"{self.prefix}:delivery:{delivery_id}"

    def subscription_deliveries(self, subscription_id: str) -> str:
        return f"{self.prefix}:subscription:{subscription_id}:deliveries"

    @property
    def dead_deliveries(self) -> str:
        return f"{self.prefix}:deliveries:dead"

    @property
    def pending_deliveries(self) -> str:
        """The delivery schedule: pending ids scored by when their next attempt
        is due, or, while one is claimed, by when its lease ends."""
        return f"{self.prefix}:deliveries:pending"

    @property
    def started_deliveries(self) -> str:
        return f"{self.prefix}:deliveries:started"

    @property
    def pump_scheduled(self) -> str:
        return f"{self.prefix}:deliveries:pump-scheduled"

    @property
    def pump_wakeup(self) -> str:
        return f"{self.prefix}:deliveries:pump-wakeup"

    # -- metrics ------------------------------------------------------------------

    def metric_counter(self, name: str) -> str:
        return f"{self.prefix}:metrics:counter:{name}"

    def metric_histogram(self, name: str) -> str:
        return f"{self.prefix}:metrics:histogram:{name}"
