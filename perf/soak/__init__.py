"""Soak test: realistic Codat traffic through the real stack, with faults,
checked against an oracle. Library (`run_soak(SoakConfig(...))`, used by
tests/resilience) and CLI (``python -m perf.soak --help``);
docs/resilience.md describes the invariants and the results.

What one run does
-----------------
1. Starts a private, persistent Redis (AOF, ``appendfsync everysec``,
   ``maxmemory-policy noeviction``), gunicorn (4 workers by default), RQ
   worker pools (``python -m workers --queues inbox`` / ``deliveries``, or
   the Procfile's mixed ``python -m workers`` with ``--rq-workers``), the
   clock (``python -m workers.clock``) and a local subscriber
   (tests/support/subscriber.py) that verifies every request with
   ``standardwebhooks``; subscribes it to every notification.
2. Builds N companies with realistic mixed lifecycles (tests/support/lifecycles.py:
   ready, failed then linked, revoked after ready, reconnected, several
   banking connections, company deleted, ...). Every event gets a Svix
   message id and is delivered 1 to 3 times; the deliveries are laid out in
   time, shuffled within windows and posted concurrently, spread over
   ``--duration`` seconds, each signed by the ``svix`` library at send time.
   Like Codat, the poster re-sends with the same ``webhook-id`` until it gets
   a 2xx (bounded).
3. While it posts: SIGKILLs a worker every ``--kill-every`` seconds (and
   starts a replacement, as a process supervisor would), restarts Redis at
   ``--redis-restart-at`` seconds (graceful; or ``--redis-crash``: SIGKILL and
   the last ``--lose-seconds`` of the AOF cut off, as a host crash would),
   makes the subscriber answer 500, hang or go down during
   ``--subscriber-faults`` windows. Any process that exits without being
   killed is reported, then restarted.
4. Waits until the system is quiet, then checks the invariants (see
   `Oracle.verify`, perf/soak/oracle.py) and measures Redis commands (and
   Redis CPU) per event from INFO commandstats deltas, summed across Redis
   restarts, net of the idle background rate and of the harness's own
   commands.

``--cost-model`` instead measures each unit of work alone (docs/scaling.md).

The report is printed; the exit status is 1 if any invariant broke.

Everything runs on loopback, on free ports, in a data dir of its own (a temp
dir unless ``--data-dir``), which keeps the process logs and the AOF. It
never touches a Redis on 6379. Every loop is bounded in time.

Processes are started and stopped from the thread that calls `run_soak`
(PR_SET_PDEATHSIG ties each child to the thread that started it).

Modules
-------
``config``         SoakConfig, SubscriberFault, the stack's environment
``plan``           the companies, their events and the delivery order
``traffic``        the Poster (Codat's side: signed, retried deliveries)
``stack``          the app's processes, supervised (tests/support/processes.py)
``faults``         worker kills, Redis restarts and crashes, abandoned jobs
``measure``        Redis commandstats, the harness's own commands
``oracle``         the invariants; ``notifications`` those of the subscriber
``report``         SoakReport and its figures
``run``            SoakRun: the main loop, settling; ``run_soak``
``cost_model``     ``--cost-model``
``__main__``       the CLI
"""

from __future__ import annotations

from perf.soak.config import SoakConfig, SubscriberFault
from perf.soak.cost_model import cost_model
from perf.soak.plan import Plan, plan_traffic
from perf.soak.report import SoakReport
from perf.soak.run import SoakRun, run_soak

__all__ = [
    "Plan",
    "SoakConfig",
    "SoakReport",
    "SoakRun",
    "SubscriberFault",
    "cost_model",
    "plan_traffic",
    "run_soak",
]
