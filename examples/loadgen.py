"""Load generator: keep a realistic mix of tasks from examples/tasks.py flowing.

Run from the repository root against the broker the example worker uses::

    CELERY_BROKER_URL=redis://127.0.0.1:6379/0 python -m examples.loadgen --rate 5

Tasks are sent at ``--rate`` per second on average (exponential gaps, as independent users
would), drawn from :data:`MIX`: mostly quick successes, some sleeps (a few long ones), failures
of three exception classes, retries, countdowns (ETA) and priorities 0-9. With
``--orphan-queue NAME`` a few tasks also go to a queue no worker consumes, so the queue alerts
and panels have something to show. It stops after ``--count`` tasks or ``--duration`` seconds
(0: run until SIGTERM/SIGINT), logging a summary line per kind.
"""

from __future__ import annotations

import argparse
import logging
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from celery import Task

from examples import tasks

log = logging.getLogger("loadgen")


@dataclass(frozen=True)
class Send:
    """One ``apply_async`` call: the task, its positional arguments and its options."""

    kind: str
    task: Task
    args: tuple[Any, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)


def _add(rng: random.Random) -> Send:
    return Send("add", tasks.add, (rng.randint(0, 100), rng.randint(0, 100)))


def _sleep(rng: random.Random) -> Send:
    return Send("sleep", tasks.sleep, (round(rng.uniform(0.05, 2.0), 2),))


def _slow(rng: random.Random) -> Send:
    return Send("slow", tasks.sleep, (round(rng.uniform(15, 45), 1),))


def _fail_value(rng: random.Random) -> Send:
    return Send("fail_value", tasks.fail_value, (f"bad value {rng.randint(1, 9)}",))


def _fail_key(rng: random.Random) -> Send:
    return Send("fail_key", tasks.fail_key, (rng.choice(["user", "order", "sku"]),))


def _charge(rng: random.Random) -> Send:
    return Send("charge", tasks.charge, (rng.randint(5, 500),))


def _flaky(rng: random.Random) -> Send:
    return Send("flaky", tasks.flaky, (rng.randint(1, 3),))


def _countdown(rng: random.Random) -> Send:
    return Send("countdown", tasks.add, (1, 1), {"countdown": rng.randint(10, 120)})


def _priority(rng: random.Random) -> Send:
    return Send("priority", tasks.add, (2, 2), {"priority": rng.randint(0, 9)})


#: (weight, kind, factory): the task mix. Weights are relative.
MIX = (
    (50, "add", _add),
    (15, "sleep", _sleep),
    (1, "slow", _slow),
    (6, "fail_value", _fail_value),
    (3, "fail_key", _fail_key),
    (3, "charge", _charge),
    (5, "flaky", _flaky),
    (8, "countdown", _countdown),
    (9, "priority", _priority),
)


def next_send(rng: random.Random, orphan_queue: str | None = None) -> Send:
    """Draw the next task from :data:`MIX`; with ``orphan_queue``, 1 in 50 goes there."""
    if orphan_queue and rng.random() < 0.02:
        return Send("orphan", tasks.add, (0, 0), {"queue": orphan_queue})
    factories = [factory for _, _, factory in MIX]
    weights = [weight for weight, _, _ in MIX]
    return rng.choices(factories, weights)[0](rng)


def run(rate: float, count: int, duration: float, seed: int | None,
        orphan_queue: str | None, stop: threading.Event) -> Counter[str]:
    """Send tasks until ``count`` (0: no limit), ``duration`` seconds (0: none) or ``stop``.

    Returns how many tasks of each kind were sent.
    """
    rng = random.Random(seed)
    sent: Counter[str] = Counter()
    deadline = time.monotonic() + duration if duration else float("inf")
    while not stop.is_set() and (not count or sum(sent.values()) < count):
        if time.monotonic() >= deadline:
            break
        send = next_send(rng, orphan_queue)
        send.task.apply_async(send.args, **send.options)
        sent[send.kind] += 1
        stop.wait(rng.expovariate(rate))
    return sent


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=5.0, help="tasks per second (mean)")
    parser.add_argument("--count", type=int, default=0, help="stop after N tasks (0: no limit)")
    parser.add_argument("--duration", type=float, default=0.0,
                        help="stop after S seconds (0: no limit)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (repeatable mix)")
    parser.add_argument("--orphan-queue", default=None,
                        help="also send 2%% of tasks to this queue, which no worker consumes")
    args = parser.parse_args(argv)
    if args.rate <= 0:
        parser.error("--rate must be > 0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    log.info("start rate=%s count=%s duration=%s broker=%s", args.rate, args.count,
             args.duration, tasks.app.conf.broker_url.split("@")[-1])
    sent = run(args.rate, args.count, args.duration, args.seed, args.orphan_queue, stop)
    log.info("stop sent=%d %s", sum(sent.values()),
             " ".join(f"{kind}={n}" for kind, n in sorted(sent.items())))


if __name__ == "__main__":
    main()
