"""``python -m perf.soak``: the command line (``--help`` lists every option)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from perf.soak.config import SoakConfig, SubscriberFault
from perf.soak.cost_model import cost_model
from perf.soak.run import run_soak


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(part) for part in text.split(",") if part.strip())


def _pairs(values: Sequence[str]) -> tuple[tuple[str, str], ...]:
    pairs = []
    for value in values:
        name, sep, setting = value.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"--env wants NAME=VALUE, got {value!r}")
        pairs.append((name, setting))
    return tuple(pairs)


def parse_args(argv: Sequence[str] | None = None) -> tuple[SoakConfig | None, Path | None]:
    parser = argparse.ArgumentParser(
        prog="python -m perf.soak",
        description="Soak the real stack with realistic Codat traffic and faults; "
        "exit 1 if an invariant breaks.",
    )
    add = parser.add_argument
    add("--companies", type=int, default=200)
    add("--duration", type=float, default=20.0, help="seconds over which deliveries are posted")
    add("--seed", type=int, default=1)
    add("--max-copies", type=int, default=3, help="each event is delivered 1..N times")
    add("--window", type=int, default=64, help="deliveries are shuffled within windows this big")
    add("--concurrency", type=int, default=16, help="posting threads")
    add("--web-workers", type=int, default=4)
    add("--rq-workers", type=int, default=0, help="`python -m workers` (both queues)")
    add("--inbox-workers", type=int, default=2, help="`python -m workers --queues inbox`")
    add("--delivery-workers", type=int, default=1, help="`... --queues deliveries`")
    add("--kill-every", type=float, default=None, help="SIGKILL a worker every S seconds")
    add("--kill-from", type=float, default=1.0)
    add("--kill-until", type=float, default=None, help="default: end of posting")
    add("--redis-restart-at", type=_floats, default=(), help="seconds, comma-separated")
    add(
        "--redis-crash",
        action="store_true",
        help="instead of a graceful restart, SIGKILL Redis and cut the last --lose-seconds "
        "of its AOF (what a host crash does to writes not yet fsynced)",
    )
    add("--lose-seconds", type=float, default=1.0)
    add(
        "--subscriber-faults",
        type=lambda s: tuple(SubscriberFault.parse(p) for p in s.split(",") if p.strip()),
        default=(),
        help="mode@start+length,... with mode fail|hang|down, e.g. fail@10+5,hang@30+4",
    )
    add("--hang-seconds", type=float, default=12.0)
    add("--event-types", default="*", help="subscription's event types; 'none' for no subscriber")
    add("--settle-timeout", type=float, default=240.0)
    add("--allow-dead-letters", action="store_true")
    add("--data-dir", type=Path, default=None)
    add("--log-level", default="INFO")
    add("--env", action="append", default=[], help="NAME=VALUE for the stack's processes")
    add("--json", type=Path, default=None, help="also write the report as JSON here")
    add("--quiet", action="store_true")
    add("--cost-model", action="store_true", help="only measure Redis commands per unit of work")
    args = parser.parse_args(argv)
    if args.cost_model:
        return None, args.json
    event_types = () if args.event_types == "none" else tuple(args.event_types.split(","))
    config = SoakConfig(
        companies=args.companies,
        duration=args.duration,
        seed=args.seed,
        max_copies=args.max_copies,
        window=args.window,
        concurrency=args.concurrency,
        web_workers=args.web_workers,
        rq_workers=args.rq_workers,
        inbox_workers=args.inbox_workers,
        delivery_workers=args.delivery_workers,
        kill_every=args.kill_every,
        kill_from=args.kill_from,
        kill_until=args.kill_until,
        redis_restarts=args.redis_restart_at,
        redis_crash=args.redis_crash,
        lose_seconds=args.lose_seconds,
        subscriber_faults=args.subscriber_faults,
        hang_seconds=args.hang_seconds,
        event_types=event_types,
        settle_timeout=args.settle_timeout,
        allow_dead_letters=args.allow_dead_letters,
        data_dir=args.data_dir,
        log_level=args.log_level,
        env=_pairs(args.env),
        verbose=not args.quiet,
    )
    return config, args.json


def main(argv: Sequence[str] | None = None) -> int:
    config, json_path = parse_args(argv)
    if config is None:
        figures = cost_model()
        print(json.dumps(figures, indent=2))
        if json_path is not None:
            json_path.write_text(json.dumps(figures, indent=2))
        return 0
    report = run_soak(config)
    print(report.text())
    if json_path is not None:
        json_path.write_text(report.to_json())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
