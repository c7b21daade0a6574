"""Redis memory per company at 100,000 companies, and per remembered webhook id.

Target (issue 6): at most 2 KiB of Redis memory per company, with its history
bounded (``COMPANY_HISTORY_LIMIT`` transitions, ``COMPANY_EVENT_LOG_LIMIT``
logged events, whatever happens to the company).

Run from the repository root::

    python -m perf.memory                       # 100,000 companies, ~3 min on 2 cores
    python -m perf.memory --quick               # 10,000 companies, 20,000 ids, ~20 s
    python -m perf.memory --companies 50000 --seen-ids 200000 --fillers 1

What happens, on a private Redis (``tests.support.processes.start_redis``; never the shared
6379), nothing persisted:

* **companies, through the real code path.** ``--companies`` companies, every
  lifecycle kind of ``tests.support.lifecycles`` in turn (Codat's own example
  bodies, fresh ids), are parsed with ``parse_codat_event`` and applied with
  ``codat_authflow.company_updates.CompanyUpdates.apply`` in batches of ``--batch`` companies,
  one event per company per call (events of a company arrive seconds apart in
  production, so each gets its own transaction: full transition history,
  one event-log push each). ``--fillers`` processes share the companies.
  ``apply`` writes whatever it writes today: the company document, its event
  log (``COMPANY_EVENT_LOG_LIMIT``), the reconciliation index, the funnel's
  first-seen index, state counts and metric counters, and the outbox. The
  outbox is deleted after each batch, as the relay does (XACK + XDEL) within
  milliseconds in production: it is not per-company memory;
* measured: ``INFO memory`` ``used_memory`` after the fill minus before (empty
  keyspace), divided by the companies; then the same again from an empty
  Redis with ``COMPANY_EVENT_LOG_LIMIT=0`` (``--nolog-companies`` may make
  that fill smaller: the figure per company hardly depends on the count,
  2,396 B at 10,000, 2,383 B at 25,000 and 2,384 B at 100,000 when measured),
  so the difference is the event log's share.
  ``MEMORY USAGE ... SAMPLES 0`` of a sample of companies per lifecycle
  kind gives the document and event log per key type, and of the shared keys
  (indexes, counters) their share per company;
* **bounded history**: one company flapping through ``--churn``
  disconnect/reconnect cycles (each event applied on its own) must keep at
  most ``COMPANY_HISTORY_LIMIT`` transitions and ``COMPANY_EVENT_LOG_LIMIT``
  events; its document and log size are printed;
* **remembered webhook ids**: ``--seen-ids`` Svix-style ids
  (``msg_`` + 27 base62 characters, like Codat's) accepted through
  ``codat_authflow.storage.inbox.Inbox.accept`` (the receiver's Lua script), then the inbox
  stream deleted (the drain deletes each entry once applied), so what is left
  is the ``seen`` keys (72 h TTL); cross-checked with the same number of bare
  ``SET key 1 NX EX ttl`` from an empty Redis;
* **deliveries** (not per company, but what a ``company.ready`` subscription
  costs): ``codat_authflow.delivery.relay`` over a few hundred ready companies, then
  ``MEMORY USAGE`` of the delivery documents (kept 30 days once finished).

Baselines printed with each result: the target itself (2 KiB), and the raw
Codat webhook bodies of a company's events (what storing the events as
received would cost, before any Redis overhead). A fill whose stored states or
counts disagree with what the lifecycles must end in, or whose bounds do not
hold, is reported as FAILED with no figure (exit status 1).
"""

from __future__ import annotations

import argparse
import json
import random
import string
import sys
import time
import zlib
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from statistics import fmean

import redis as redis_lib

from codat_authflow.company_updates import CompanyUpdates
from codat_authflow.logs import configure_logging
from codat_authflow.settings import Settings
from codat_authflow.storage.codec import decode_record
from codat_authflow.storage.companies import CompanyStore
from codat_authflow.storage.funnel import first_seen_key
from codat_authflow.storage.inbox import Inbox
from codat_authflow.storage.keys import Keys
from codat_authflow.storage.reconciliation import TRACKED_STATES, index_key
from perf.support import code_version, median
from state_machine import parse_codat_event
from tests.support.lifecycles import LIFECYCLES, Lifecycle, build, new_connection
from tests.support.processes import TEST_API_TOKEN, TEST_WEBHOOK_SECRET, RedisServer, start_redis
from tests.support.signing import encode_body

TARGET_BYTES_PER_COMPANY = 2048
PREFIX = "authflow"
KEYS = Keys(PREFIX)
SAMPLE_PER_KIND = 30
STARTED = time.monotonic()
BASE62 = string.digits + string.ascii_letters


def defaults() -> Settings:
    """Today's defaults of the settings that shape what is stored (the
    environment's COMPANY_* and WEBHOOK_DEDUPE_TTL_SECONDS are ignored: the
    benchmark measures the defaults, and sets the event log limit itself)."""
    return Settings.from_env(
        {
            "REDIS_URL": "redis://127.0.0.1:1/0",
            "API_TOKEN": TEST_API_TOKEN,
            "CODAT_WEBHOOK_SECRETS": TEST_WEBHOOK_SECRET,
        }
    )


def kib(n: float) -> str:
    return f"{n / 1024:,.2f} KiB"


def used_memory(conn: redis_lib.Redis) -> tuple[int, int]:
    info = conn.info("memory")
    return int(info["used_memory"]), int(info.get("used_memory_dataset", 0))


# -- filling, in worker processes ------------------------------------------------


@dataclass
class FillResult:
    companies: int = 0
    events: int = 0
    failed: int = 0  # companies whose events raised in apply
    raw_bytes: int = 0  # sum of the raw Codat bodies
    expected_states: Counter = field(default_factory=Counter)
    events_by_kind: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    raw_by_kind: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    sample: dict[str, tuple[str, str, int]] = field(default_factory=dict)  # id -> kind, state, n
    seconds: float = 0.0

    def merge(self, other: FillResult) -> None:
        self.companies += other.companies
        self.events += other.events
        self.failed += other.failed
        self.raw_bytes += other.raw_bytes
        self.expected_states.update(other.expected_states)
        for kind, values in other.events_by_kind.items():
            self.events_by_kind[kind] += values
        for kind, values in other.raw_by_kind.items():
            self.raw_by_kind[kind] += values
        self.sample.update(other.sample)
        self.seconds = max(self.seconds, other.seconds)


def fill(
    url: str, first: int, count: int, *, event_log_limit: int, history_limit: int, batch: int
) -> FillResult:
    """Companies ``first`` .. ``first + count - 1`` (their index picks the
    lifecycle kind), applied batch by batch, one event per company per call."""
    started = time.monotonic()
    conn = redis_lib.Redis.from_url(url)
    store = CompanyStore(conn, KEYS, history_limit=history_limit, event_log_limit=event_log_limit)
    kinds = sorted(LIFECYCLES)
    result = FillResult()
    per_kind_sampled: Counter = Counter()
    for start in range(first, first + count, batch):  # bounded by count
        lives = []
        for index in range(start, min(start + batch, first + count)):
            kind = kinds[index % len(kinds)]
            life, state = build(kind)
            events = [parse_codat_event(body) for body in life.events]
            raw = sum(len(encode_body(body)) for body in life.events)
            lives.append((life.company_id, events))
            result.companies += 1
            result.events += len(events)
            result.raw_bytes += raw
            result.expected_states[state] += 1
            result.events_by_kind[kind].append(len(events))
            result.raw_by_kind[kind].append(raw)
            if per_kind_sampled[kind] < SAMPLE_PER_KIND:
                per_kind_sampled[kind] += 1
                result.sample[life.company_id] = (kind, state, len(events))
        for step in range(max(len(events) for _, events in lives)):
            applied = CompanyUpdates(store).apply(
                {cid: [events[step]] for cid, events in lives if step < len(events)}
            )
            result.failed += len(applied.failed)
        conn.delete(KEYS.outbox)  # relayed (XACK + XDEL) within ms in production
    conn.close()
    result.seconds = time.monotonic() - started
    return result


def fill_parallel(
    server: RedisServer, companies: int, fillers: int, *, event_log_limit: int, args
) -> FillResult:
    shares = [companies // fillers + (1 if i < companies % fillers else 0) for i in range(fillers)]
    firsts = [sum(shares[:i]) for i in range(fillers)]
    merged = FillResult()
    with ProcessPoolExecutor(fillers, mp_context=get_context("fork")) as pool:
        futures = [
            pool.submit(
                fill,
                server.url,
                first,
                share,
                event_log_limit=event_log_limit,
                history_limit=args.history_limit,
                batch=args.batch,
            )
            for first, share in zip(firsts, shares, strict=True)
            if share
        ]
        for future in futures:
            merged.merge(future.result(timeout=args.timeout))
    return merged


# -- checking and measuring --------------------------------------------------------


def verify_fill(
    conn: redis_lib.Redis, result: FillResult, event_log_limit: int, history_limit: int
) -> list[str]:
    problems = []
    if result.failed:
        problems.append(f"{result.failed} companies failed to apply")
    stored = CompanyStore(conn, KEYS).state_counts()
    expected = {state: n for state, n in result.expected_states.items() if n}
    if {s: n for s, n in stored.items() if n} != expected:
        problems.append(f"state counts {stored} != expected {expected}")
    store = CompanyStore(conn, KEYS)
    wrong = []
    for company_id, (kind, state, n_events) in result.sample.items():
        record = store.get(company_id)
        log_length = len(record.events) if record is not None else -1
        want_log = min(n_events, event_log_limit)
        if record is None or record.state.value != state or log_length != want_log:
            wrong.append(f"{kind} {company_id}")
        elif len(record.history) > history_limit:
            wrong.append(f"{kind} {company_id}: {len(record.history)} transitions")
    if wrong:
        problems.append(f"{len(wrong)} sampled companies wrong, e.g. {wrong[:3]}")
    if conn.exists(KEYS.outbox):
        problems.append("outbox not empty")
    return problems


def memory_usage(conn: redis_lib.Redis, key: str) -> int:
    return int(conn.memory_usage(key, samples=0) or 0)


@dataclass
class KindRow:
    kind: str
    events: float
    raw: float
    doc_payload: float
    doc_usage: float
    log_payload: float
    log_usage: float
    doc_zlib: float  # MEMORY USAGE of the document compressed with zlib (level 6) ...
    log_zlib: float  # ... and of the whole event log compressed as one blob


def compressed_usage(conn: redis_lib.Redis, value: bytes) -> int:
    """MEMORY USAGE of `value` compressed with zlib, stored under a key of the
    same length as a company key (written after the used_memory measurement,
    then deleted)."""
    key = KEYS.company(f"zlib-{'0' * 31}")
    conn.set(key, zlib.compress(value))
    usage = memory_usage(conn, key)
    conn.delete(key)
    return usage


def per_kind(conn: redis_lib.Redis, result: FillResult) -> list[KindRow]:
    ids_by_kind: dict[str, list[str]] = defaultdict(list)
    for company_id, (kind, _state, _n) in result.sample.items():
        ids_by_kind[kind].append(company_id)
    rows = []
    for kind in sorted(ids_by_kind):
        ids = ids_by_kind[kind]
        with conn.pipeline(transaction=False) as pipe:
            for company_id in ids:
                pipe.get(KEYS.company(company_id))
                pipe.memory_usage(KEYS.company(company_id), samples=0)
            replies = pipe.execute()
        doc_len, doc_use, log_len, log_use, doc_z, log_z = [], [], [], [], [], []
        for index in range(len(ids)):
            document, doc = replies[2 * index : 2 * index + 2]
            # The event log lives inside the (zlib-compressed) document now:
            # report its uncompressed JSON size, and the document as stored.
            events = decode_record(document).events if document else ()
            doc_len.append(len(document or b""))
            doc_use.append(doc or 0)
            log_len.append(len(json.dumps(list(events), separators=(",", ":"))))
            log_use.append(0)
            doc_z.append(doc or 0)
            log_z.append(0)
        rows.append(
            KindRow(
                kind,
                median(result.events_by_kind[kind]),
                median(result.raw_by_kind[kind]),
                median(doc_len),
                median(doc_use),
                median(log_len),
                median(log_use),
                median(doc_z),
                median(log_z),
            )
        )
    return rows


def shared_keys(conn: redis_lib.Redis) -> dict[str, int]:
    """MEMORY USAGE of the keys every company adds to (indexes, counters)."""
    names = {"funnel first-seen index": first_seen_key(KEYS)}
    for state in TRACKED_STATES:
        names[f"reconcile index ({state.value})"] = index_key(KEYS, state)
    others = [
        key.decode()
        for key in conn.scan_iter(match=f"{PREFIX}:*", count=1000)
        if not key.startswith(f"{PREFIX}:company:".encode())
    ]
    for key in others:
        if key not in names.values():
            names[key.removeprefix(f"{PREFIX}:")] = key
    return {label: memory_usage(conn, key) for label, key in names.items() if conn.exists(key)}


def churn_company(conn: redis_lib.Redis, cycles: int, event_log_limit: int, history_limit: int):
    """A company that flaps `cycles` times (disconnected, reconnected), every
    event applied on its own; returns its record, log length, doc and log sizes."""
    store = CompanyStore(conn, KEYS, history_limit=history_limit, event_log_limit=event_log_limit)
    life = Lifecycle()
    connection = new_connection()
    life.company("company.created")
    life.connection("connection.created", connection)
    life.connection("connection.connected", connection)
    life.read("read.completed", connection)
    life.read("read.completed.initial", connection)
    for _ in range(cycles):
        life.connection("connection.disconnected", connection, example="Unlinked")
        life.connection("connection.reconnected", connection)
    for body in life.events:
        event = parse_codat_event(body)
        applied = CompanyUpdates(store).apply({life.company_id: [event]})
        if applied.failed:
            raise RuntimeError(f"churn company: apply failed: {applied.failed}")
    conn.delete(KEYS.outbox)
    record = store.get(life.company_id)
    return (
        record,
        len(life.events),
        len(record.events),
        memory_usage(conn, KEYS.company(life.company_id)),
        0,  # the event log is inside the document
    )


def svix_id(rng: random.Random) -> str:
    return "msg_" + "".join(rng.choice(BASE62) for _ in range(27))


def seen_ids_through_inbox(conn: redis_lib.Redis, count: int, ttl: int, seed: int):
    """`count` ids through Inbox.accept, the inbox stream then deleted.
    Returns (bytes per id, MEMORY USAGE median of a seen key, seconds)."""
    conn.flushall()
    inbox = Inbox(conn, KEYS, dedupe_ttl_seconds=ttl)
    rng = random.Random(seed)
    inbox.accept(svix_id(rng), b"{}", int(time.time() * 1000))  # loads the script
    conn.flushall()  # keeps the script cache
    before, _ = used_memory(conn)
    started = time.monotonic()
    ids = [svix_id(rng) for _ in range(count)]
    body = b'{"id":"x"}'
    for webhook_id in ids:
        if not inbox.accept(webhook_id, body, int(time.time() * 1000)).queued:
            raise RuntimeError(f"Inbox.accept refused a fresh id {webhook_id}")
    seconds = time.monotonic() - started
    if conn.xlen(KEYS.inbox) != count:
        raise RuntimeError(f"inbox holds {conn.xlen(KEYS.inbox)} entries, not {count}")
    conn.delete(KEYS.inbox, KEYS.drain_scheduled)
    after, _ = used_memory(conn)
    seen = conn.dbsize()
    if seen != count:
        raise RuntimeError(f"{seen} keys left, expected {count} seen ids")
    ttl_left = conn.ttl(KEYS.seen(ids[0]))
    if not 0 < ttl_left <= ttl:
        raise RuntimeError(f"seen key TTL {ttl_left}, expected <= {ttl}")
    usage = [memory_usage(conn, KEYS.seen(i)) for i in rng.sample(ids, min(200, count))]
    return (after - before) / count, median(usage), seconds, len(ids[0])


def seen_ids_bare(conn: redis_lib.Redis, count: int, ttl: int, seed: int) -> float:
    conn.flushall()
    rng = random.Random(seed + 1)
    before, _ = used_memory(conn)
    for start in range(0, count, 1000):
        with conn.pipeline(transaction=False) as pipe:
            for _ in range(min(1000, count - start)):
                pipe.set(KEYS.seen(svix_id(rng)), "1", nx=True, ex=ttl)
            pipe.execute()
    after, _ = used_memory(conn)
    if conn.dbsize() != count:
        raise RuntimeError(f"SET EX: {conn.dbsize()} keys, expected {count}")
    return (after - before) / count


def deliveries_sample(server: RedisServer, conn: redis_lib.Redis, companies: int):
    """company.ready deliveries made by the real relay for `companies` ready
    companies and one subscription; MEMORY USAGE of a delivery document."""
    from codat_authflow.bootstrap import Services
    from codat_authflow.delivery.relay import relay
    from codat_authflow.storage.deliveries import DeliveryStore

    conn.flushall()
    settings = Settings.from_env(
        {
            "REDIS_URL": server.url,
            "API_TOKEN": TEST_API_TOKEN,
            "CODAT_WEBHOOK_SECRETS": TEST_WEBHOOK_SECRET,
        }
    )
    ctx = Services.build(settings, redis=conn)
    ctx.store.outbox.ensure_group()
    ctx.subscriptions.create("https://hooks.example.com/codat", ["company.ready"], "bench")
    for _ in range(companies):
        life, _state = build("happy_path")
        for body in life.events:
            ctx.updates.apply({life.company_id: [parse_codat_event(body)]})
    created = relay(ctx)
    store = DeliveryStore(conn, KEYS)
    keys = [k.decode() for k in conn.scan_iter(match=store.key("*"), count=1000)]
    if created != companies or len(keys) != companies:
        raise RuntimeError(f"relay created {created} deliveries for {companies} ready companies")
    usage = [memory_usage(conn, key) for key in keys]
    body = median(conn.strlen(key) for key in keys)
    return median(usage), body


# -- the report ------------------------------------------------------------------


@dataclass
class FillReport:
    limit: int
    result: FillResult
    delta: int
    dataset_delta: int
    keys: int
    problems: list[str]

    @property
    def per_company(self) -> float:
        return self.delta / max(self.result.companies, 1)


def run_fill(server, conn, args, event_log_limit: int, companies: int) -> FillReport:
    conn.flushall()
    before, dataset_before = used_memory(conn)
    result = fill_parallel(
        server, companies, args.fillers, event_log_limit=event_log_limit, args=args
    )
    conn.delete(KEYS.outbox)
    after, dataset_after = used_memory(conn)
    problems = verify_fill(conn, result, event_log_limit, args.history_limit)
    report = FillReport(
        event_log_limit,
        result,
        after - before,
        dataset_after - dataset_before,
        conn.dbsize(),
        problems,
    )
    status = "FAILED: " + "; ".join(problems) if problems else "ok"
    print(
        f"  fill COMPANY_EVENT_LOG_LIMIT={event_log_limit}: {result.companies:,} companies, "
        f"{result.events:,} events in {result.seconds:.0f} s "
        f"({result.events / max(result.seconds, 1e-9):,.0f} events/s), {report.keys:,} keys; "
        f"used_memory +{report.delta / 2**20:,.1f} MiB = {report.per_company:,.0f} B/company "
        f"(dataset {report.dataset_delta / max(result.companies, 1):,.0f} B/company)  [{status}]",
        flush=True,
    )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m perf.memory", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--companies", type=int, default=100_000, help="companies (100000)")
    parser.add_argument(
        "--nolog-companies",
        type=int,
        help="companies of the COMPANY_EVENT_LOG_LIMIT=0 fill (default: --companies)",
    )
    parser.add_argument("--seen-ids", type=int, default=100_000, help="webhook ids (100000)")
    parser.add_argument(
        "--quick", action="store_true", help="10,000 companies (both fills), 20,000 ids"
    )
    parser.add_argument("--fillers", type=int, default=2, help="filling processes (2)")
    parser.add_argument("--batch", type=int, default=200, help="companies per apply (200)")
    parser.add_argument("--churn", type=int, default=200, help="flaps of the churn company")
    parser.add_argument("--deliveries", type=int, default=300, help="sampled deliveries (300)")
    parser.add_argument("--seed", type=int, default=1128)
    parser.add_argument("--timeout", type=float, default=600.0, help="limit per fill, seconds")
    args = parser.parse_args(argv)
    if args.quick:
        args.companies, args.seen_ids = 10_000, 20_000
    args.nolog_companies = min(args.nolog_companies or args.companies, args.companies)
    too_small = min(args.companies, args.nolog_companies) < 100 or args.seen_ids < 1000
    if too_small or args.fillers < 1 or args.batch < 1:
        parser.error("need at least 100 companies, 1000 ids, one filler and a batch")
    configure_logging("WARNING")  # the relay (deliveries sample) logs every delivery at INFO
    settings = defaults()
    args.history_limit = settings.history_limit
    log_limit = settings.event_log_limit
    if log_limit == 0:
        parser.error("the default COMPANY_EVENT_LOG_LIMIT is 0: nothing to compare")

    print("memory benchmark: Redis memory per company and per remembered webhook id")
    print(
        f"  {args.companies:,} companies (all {len(LIFECYCLES)} lifecycle kinds in turn) through "
        f"CompanyUpdates.apply, {args.fillers} filler process(es), batches of {args.batch}; "
        f"COMPANY_HISTORY_LIMIT={settings.history_limit}, "
        f"COMPANY_EVENT_LOG_LIMIT={log_limit}, then 0 for {args.nolog_companies:,} companies; "
        f"{args.seen_ids:,} webhook ids through Inbox.accept (TTL {settings.dedupe_ttl_seconds} s)"
    )
    print(f"  code: {code_version()}")
    with start_redis() as server:
        conn = redis_lib.Redis.from_url(server.url)
        info = conn.info("server")
        print(
            f"  redis {info.get('redis_version', '?')} (private, pid {server.pid}, "
            f"{conn.info('memory').get('mem_allocator', '?')})",
            flush=True,
        )
        try:
            with_log = run_fill(server, conn, args, log_limit, args.companies)
            rows = per_kind(conn, with_log.result) if not with_log.problems else []
            shared = shared_keys(conn) if not with_log.problems else {}
            without_log = run_fill(server, conn, args, 0, args.nolog_companies)
            conn.flushall()
            churn = churn_company(conn, args.churn, log_limit, args.history_limit)
            seen = seen_ids_through_inbox(
                conn, args.seen_ids, settings.dedupe_ttl_seconds, args.seed
            )
            bare = seen_ids_bare(conn, args.seen_ids, settings.dedupe_ttl_seconds, args.seed)
            delivery = deliveries_sample(server, conn, args.deliveries)
        finally:
            conn.close()
    return report(args, settings, with_log, without_log, rows, shared, churn, seen, bare, delivery)


def report(args, settings, with_log, without_log, rows, shared, churn, seen, bare, delivery):
    record, churn_events, churn_log, churn_doc, churn_log_bytes = churn
    problems = with_log.problems + without_log.problems
    if record is None or len(record.history) > settings.history_limit:
        problems.append(f"churn company keeps {len(record.history) if record else '?'} transitions")
    if churn_log > settings.event_log_limit:
        problems.append(f"churn company keeps {churn_log} logged events")
    if problems:
        print("\n!!! FAILED: " + "; ".join(problems) + "\nno figure is reported.")
        return 1
    companies = with_log.result.companies
    raw = with_log.result.raw_bytes / companies
    per_company = with_log.per_company
    log_share = with_log.per_company - without_log.per_company
    print(f"\nper lifecycle kind (medians of {SAMPLE_PER_KIND} companies each; bytes):")
    print(
        f"  {'kind':<24} {'events':>6} {'raw bodies':>10} {'doc JSON':>8} {'doc MEM':>8} "
        f"{'log JSON':>8} {'log MEM':>8} {'MEM/raw':>8} {'doc zMEM':>8} {'log zMEM':>8}"
    )
    for row in rows:
        print(
            f"  {row.kind:<24} {row.events:6.0f} {row.raw:10,.0f} {row.doc_payload:8,.0f} "
            f"{row.doc_usage:8,.0f} {row.log_payload:8,.0f} {row.log_usage:8,.0f} "
            f"{(row.doc_usage + row.log_usage) / row.raw:8.2f} {row.doc_zlib:8,.0f} "
            f"{row.log_zlib:8,.0f}"
        )
    print(
        "  (doc/log JSON: STRLEN / sum of list items; MEM: MEMORY USAGE ... SAMPLES 0, "
        "key and allocator overhead included; raw bodies: Codat's JSON as received; "
        "zMEM: MEMORY USAGE of the document, and of the event log as one blob, "
        "compressed with zlib level 6)"
    )
    print(f"\nshared keys after {companies:,} companies (MEMORY USAGE, bytes per company):")
    for label, usage in sorted(shared.items(), key=lambda item: -item[1]):
        print(f"  {label:<48} {usage:>12,} B  {usage / companies:8.1f} B/company")
    doc_mean = fmean(row.doc_usage for row in rows)  # the fill has every kind equally often
    log_mean = fmean(row.log_usage for row in rows)
    shared_mean = sum(shared.values()) / companies
    rest = per_company - doc_mean - log_mean - shared_mean
    print(
        f"\nwhere a company's {per_company:,.0f} B go (means over the kinds): document "
        f"{doc_mean:,.0f} + event log {log_mean:,.0f} + shared keys {shared_mean:,.0f} + the rest "
        f"{rest:,.0f} (keyspace hash table, allocator)"
    )
    compressed = (
        fmean(row.doc_zlib for row in rows)
        + fmean(row.log_zlib for row in rows)
        + shared_mean
        + rest
    )
    rest_nolog = without_log.per_company - doc_mean - shared_mean
    compressed_nolog = fmean(row.doc_zlib for row in rows) + shared_mean + rest_nolog
    print(
        f"  projection, document and event log stored zlib-compressed (the sample's compressed "
        f"values, same shared keys and rest): {compressed:,.0f} B = "
        f"{compressed / TARGET_BYTES_PER_COMPANY:.2f}x the 2 KiB target; compressed document "
        f"and no event log: {compressed_nolog:,.0f} B = "
        f"{compressed_nolog / TARGET_BYTES_PER_COMPANY:.2f}x"
    )
    print(
        f"\nchurn company ({churn_events} events, {args.churn} disconnect/reconnect cycles, "
        f"each applied on its own): {len(record.history)} transitions kept "
        f"(limit {settings.history_limit}), {churn_log} events logged "
        f"(limit {settings.event_log_limit}); doc {churn_doc:,} B + log {churn_log_bytes:,} B "
        f"= {kib(churn_doc + churn_log_bytes)}"
    )
    per_id, id_usage, seconds, id_length = seen
    print(
        f"\nremembered webhook ids ({args.seen_ids:,}, {id_length}-char Svix-style ids, "
        f"TTL {settings.dedupe_ttl_seconds // 3600} h): Inbox.accept {per_id:,.0f} B/id "
        f"(used_memory delta; {args.seen_ids / seconds:,.0f} accepts/s), bare SET NX EX "
        f"{bare:,.0f} B/id, MEMORY USAGE {id_usage:,.0f} B/key (excludes the expires entry)"
    )
    events_per_company = with_log.result.events / companies
    print(
        f"  a company's {events_per_company:.1f} webhooks: {per_id * events_per_company:,.0f} B "
        f"for {settings.dedupe_ttl_seconds // 3600} h after they arrive; "
        + ", ".join(
            f"at {rate} webhooks/s sustained: "
            f"{per_id * rate * settings.dedupe_ttl_seconds / 2**30:,.2f} GiB"
            for rate in (10, 200)
        )
    )
    doc_usage, doc_len = delivery
    print(
        f"  a company.ready delivery (per subscription, kept 30 days once finished): "
        f"{doc_usage:,.0f} B (MEMORY USAGE; {doc_len:,.0f} B JSON), median of "
        f"{args.deliveries} made by codat_authflow.delivery.relay"
    )

    print(f"\nsummary ({time.monotonic() - STARTED:.0f} s in all):")
    print(f"  {'':<44} {'B/company':>10} {'/ 2 KiB':>8} {'/ raw bodies':>13}")
    for label, value in (
        (f"company, event log limit {settings.event_log_limit} (default)", per_company),
        (
            f"company, event log 0 ({without_log.result.companies:,} companies)",
            without_log.per_company,
        ),
        ("event log's share", log_share),
    ):
        print(
            f"  {label:<44} {value:10,.0f} {value / TARGET_BYTES_PER_COMPANY:8.2f} "
            f"{value / raw:13.2f}"
        )
    print(f"  {'raw Codat bodies of a company (baseline)':<44} {raw:10,.0f}")
    met = per_company <= TARGET_BYTES_PER_COMPANY
    print(
        f"Redis memory per company at {companies:,} companies (used_memory delta, event log "
        f"{settings.event_log_limit}): {per_company:,.0f} B = "
        f"{per_company / TARGET_BYTES_PER_COMPANY:.2f}x the 2 KiB target, "
        f"{per_company / raw:.2f}x the raw bodies -> target <= 2 KiB "
        f"{'MET' if met else 'NOT MET'}"
        + ("" if met else f" (over by {per_company - TARGET_BYTES_PER_COMPANY:,.0f} B)")
    )
    return 0


if __name__ == "__main__":
    try:
        code = main()
    except RuntimeError as exc:  # a server that would not start, a wrong count, a timeout
        print(f"\n!!! FAILED: {exc}")
        code = 1
    sys.exit(code)
