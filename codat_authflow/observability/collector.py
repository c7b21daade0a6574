"""The Prometheus view of the service, computed at scrape time.

Counters and histograms come from Redis (`codat_authflow.observability.metrics`, written by
every web and worker process). Gauges are read from the data itself, so they
can never drift from it: companies per state (the `{p}:stats:states` hash that
`CompanyUpdates.apply` maintains), RQ queue and registry sizes, the inbox and
outbox streams, the oldest inbox entry's age, dead letters.

If Redis cannot be reached, the scrape still answers, with
`authflow_redis_up 0` and nothing else, so that an alert can say why.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import structlog
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue

from codat_authflow.observability.metrics import (
    COUNTERS,
    HISTOGRAMS,
    read_counters,
    read_histograms,
)
from codat_authflow.storage.keys import Keys
from codat_authflow.storage.rq_workers import prune_dead_workers
from state_machine import CompanyState

log = structlog.get_logger(__name__)

RQ_REGISTRIES = ("started", "failed", "scheduled", "deferred")


class AuthflowCollector(Collector):
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        queue_names: tuple[str, ...],
        *,
        dead_deliveries_key: str,
        clock: Callable[[], float] = time.time,
    ):
        self.redis = redis
        self.keys = keys
        self.queue_names = queue_names
        self.dead_deliveries_key = dead_deliveries_key
        self.clock = clock

    def describe(self) -> list[Metric]:
        return []  # do not scrape Redis when registering

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("authflow_redis_up", "1 if Redis answered this scrape, else 0.")
        try:
            metrics = list(self._collect())
        except RedisError as exc:
            log.warning("metrics.redis_unavailable", error=repr(exc))
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from metrics

    def _collect(self) -> Iterator[Metric]:
        counters = read_counters(self.redis, self.keys.prefix)
        for counter in COUNTERS:
            family = CounterMetricFamily(counter.name, counter.help, labels=counter.labels)
            for labels, value in sorted(counters[counter.name].items()):
                family.add_metric(list(labels), value)
            yield family
        histograms = read_histograms(self.redis, self.keys.prefix)
        for histogram in HISTOGRAMS:
            value = histograms[histogram.name]
            family = HistogramMetricFamily(histogram.name, histogram.help)
            buckets = [(floatToGoString(bound), count) for bound, count in value.buckets]
            family.add_metric([], buckets, value.sum)
            yield family
        yield from self._data_gauges()
        yield from self._delivery_gauges()
        yield from self._rq_gauges()

    def _delivery_gauges(self) -> Iterator[Metric]:
        keys = self.keys
        ids = [i.decode() for i in self.redis.zrange(keys.subscriptions, 0, -1)]
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(keys.pending_deliveries)
            pipe.hlen(keys.started_deliveries)
            for subscription_id in ids:
                pipe.hmget(
                    keys.subscription(subscription_id), "breaker_failures", "breaker_open_until"
                )
            scheduled, in_flight, *breakers = pipe.execute()
        yield GaugeMetricFamily(
            "authflow_deliveries_scheduled",
            "Pending deliveries in the schedule (due, waiting for a retry, or in flight).",
            value=scheduled,
        )
        yield GaugeMetricFamily(
            "authflow_deliveries_in_flight",
            "Deliveries claimed by a pump whose attempt has not been recorded yet.",
            value=in_flight,
        )
        state = GaugeMetricFamily(
            "authflow_subscription_breaker_open",
            "1 while a subscription's circuit breaker is open or half open (one probe at a "
            "time), 0 when closed.",
            labels=["subscription"],
        )
        failures = GaugeMetricFamily(
            "authflow_subscription_consecutive_failures",
            "Consecutive failed delivery attempts per subscription (the breaker's count).",
            labels=["subscription"],
        )
        for subscription_id, (count, open_until) in zip(ids, breakers, strict=True):
            state.add_metric([subscription_id], 1 if open_until else 0)
            failures.add_metric([subscription_id], int(count or 0))
        yield state
        yield failures

    def _data_gauges(self) -> Iterator[Metric]:
        keys = self.keys
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.state_counts)
            pipe.xlen(keys.inbox)
            pipe.xlen(keys.outbox)
            pipe.xlen(keys.dead_letters)
            pipe.xlen(keys.outbox_dead_letters)
            pipe.zcard(self.dead_deliveries_key)
            pipe.xrange(keys.inbox, "-", "+", count=1)
            states, inbox, outbox, inbox_dead, outbox_dead, dead_deliveries, oldest = pipe.execute()

        companies = GaugeMetricFamily(
            "authflow_companies", "Companies in each state now.", labels=["state"]
        )
        by_state = {k.decode(): int(v) for k, v in states.items()}
        for state in CompanyState:
            companies.add_metric([state.value], by_state.get(state.value, 0))
        yield companies

        streams = GaugeMetricFamily(
            "authflow_stream_entries",
            "Entries waiting in our Redis streams: inbox (webhooks not yet applied), outbox "
            "(notifications not yet relayed) and their dead letters.",
            labels=["stream"],
        )
        streams.add_metric(["inbox"], inbox)
        streams.add_metric(["outbox"], outbox)
        streams.add_metric(["inbox_dead_letters"], inbox_dead)
        streams.add_metric(["outbox_dead_letters"], outbox_dead)
        yield streams

        age = 0.0
        if oldest:
            entry_id = oldest[0][0].decode()
            age = max(0.0, self.clock() - int(entry_id.split("-")[0]) / 1000)
        yield GaugeMetricFamily(
            "authflow_inbox_oldest_entry_age_seconds",
            "Age of the oldest webhook waiting in the inbox (0 when empty).",
            value=age,
        )
        yield GaugeMetricFamily(
            "authflow_delivery_dead_letters",
            "Downstream deliveries that exhausted their retries and wait for a replay.",
            value=dead_deliveries,
        )

    def _rq_gauges(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(
            "authflow_rq_queue_jobs",
            "RQ jobs per queue: queued (waiting for a worker), started, failed, scheduled "
            "(retries and delayed delivery attempts), deferred.",
            labels=["queue", "status"],
        )
        for name in self.queue_names:
            queue = Queue(name, connection=self.redis)
            jobs.add_metric([name, "queued"], queue.count)
            registries = {
                "started": queue.started_job_registry,
                "failed": queue.failed_job_registry,
                "scheduled": queue.scheduled_job_registry,
                "deferred": queue.deferred_job_registry,
            }
            for status in RQ_REGISTRIES:
                jobs.add_metric([name, status], registries[status].get_job_count(cleanup=False))
        yield jobs
        yield GaugeMetricFamily(
            "authflow_rq_workers",
            "RQ workers alive: registered, with a heartbeat within RQ_WORKER_TTL_SECONDS "
            "(or within their job's timeout while they run one).",
            value=prune_dead_workers(self.redis, self.queue_names),
        )


def build_registry(collector: AuthflowCollector) -> CollectorRegistry:
    """A registry of our collector alone: the default one's process metrics
    would describe whichever gunicorn worker answered, which misleads."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
