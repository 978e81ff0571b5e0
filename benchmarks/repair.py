"""Repair benchmark: do repair rounds lower the model's ingest throughput?

    python benchmarks/repair.py [--lifecycles 50000] [--suspects 50000] [--runs 3]

The event thread's work is :meth:`Model.process_many` under the model's lock; the repairer's
rounds take the same lock (the scan of the tasks in progress after a gap, state lookups in
chunks, :meth:`Model.apply_repair` per finding) and the same GIL. This measures, in one process
and one run, the events per second ``process_many`` applies (batches of 1,000 Celery-shaped
task events: 4 per lifecycle, 20 names, 4 queues, 4 workers, 5 % failures; no history) in
three configurations, alternated ``--runs`` times:

- ``baseline``: no repairer;
- ``repair, default``: a repairer with the defaults (a round every 5 s, 500 tasks per round)
  working through ``--suspects`` tasks in progress left by a gap (the scan of the tasks in
  progress included), its result backend answering each read after 0.2 ms (a Redis round trip)
  with an outcome that is applied, its workers after 50 ms;
- ``repair, stressed``: the same with a round every 10 ms — far more repair work than any real
  gap asks for — to show where the contention is;
- ``stressed, paced``: the stressed repairer while events arrive at half the baseline's rate
  (a consumer with slack, as when it waits for the broker between batches): does the ingest
  keep its pace, and how far do the repairs get meanwhile?

The model's lock is not fair: while the event path applies batches back to back (a saturated
consumer), the repairer waits for it — repairs are delayed, ingest is not.

Printed: events/s (median of the runs) and the ratio to the baseline of the same run, the
repairs applied meanwhile (median), and the longest gap scan (the time the scan of the tasks in
progress holds the model's lock, once per gap).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from exporter.config import DEFAULT_REPAIR_BATCH, DEFAULT_REPAIR_INTERVAL  # noqa: E402
from exporter.repair.findings import Finding  # noqa: E402
from exporter.repair.repairer import Repairer  # noqa: E402
from exporter.state.health import Health  # noqa: E402
from exporter.state.model import Model  # noqa: E402

NAMES = [f"bench.tasks.t{i}" for i in range(20)]
QUEUES = ["q0", "q1", "q2", "q3"]
WORKERS = [f"celery@bench{i}" for i in range(4)]
BATCH = 1000


def lifecycles(count: int, start: float) -> list[dict[str, Any]]:
    """``count`` task lifecycles as Celery-shaped event dicts, in order."""
    rng = random.Random(7)
    events: list[dict[str, Any]] = []
    t = start
    for _ in range(count):
        task_id, name = str(uuid.uuid4()), rng.choice(NAMES)
        queue, worker = rng.choice(QUEUES), rng.choice(WORKERS)
        end = "task-failed" if rng.random() < 0.05 else "task-succeeded"
        common = {"uuid": task_id, "utcoffset": 0, "pid": 1, "clock": 1}
        events.append({"type": "task-sent", "timestamp": t, "hostname": "web-1", "name": name,
                       "args": "(1, 2)", "kwargs": "{}", "retries": 0, "eta": None,
                       "expires": None, "queue": queue, "exchange": "", "routing_key": queue,
                       **common})
        events.append({"type": "task-received", "timestamp": t + 0.001, "hostname": worker,
                       "name": name, "args": "(1, 2)", "kwargs": "{}", "retries": 0,
                       **common})
        events.append({"type": "task-started", "timestamp": t + 0.002, "hostname": worker,
                       **common})
        if end == "task-succeeded":
            events.append({"type": end, "timestamp": t + 0.05, "hostname": worker,
                           "result": "3", "runtime": 0.048, **common})
        else:
            events.append({"type": end, "timestamp": t + 0.05, "hostname": worker,
                           "exception": "ValueError('boom')", "traceback": "Traceback…",
                           **common})
        t += 0.0001
    return events


class SlowBackend:
    """A result backend whose every read takes ``latency`` seconds (sleeping: the GIL is free,
    as during a network round trip) and finds the task succeeded."""

    name = "result_backend"

    def __init__(self, latency: float) -> None:
        self.latency = latency

    def outcome(self, task_id: str) -> Finding | None:
        time.sleep(self.latency)
        return Finding(task_id, "SUCCESS", "result_backend", time.time(), result="3")


class SlowWorkers:
    """Workers answering ``query_task`` after ``latency`` seconds, holding nothing."""

    name = "workers"

    def __init__(self, latency: float) -> None:
        self.latency = latency

    def held(self, task_ids: Any, workers: int) -> dict[str, Finding]:
        time.sleep(self.latency)
        return {}


def make_model() -> Model:
    return Model(runtime_buckets=(0.1, 1.0, 10.0), queue_wait_buckets=(0.1, 1.0, 10.0),
                 max_tasks=200_000, max_task_names=1000, worker_timeout=30.0,
                 worker_retention=3600.0)


def ingest(model: Model, events: list[dict[str, Any]], pace: float | None = None) -> float:
    """Seconds ``process_many`` takes for ``events`` in batches of :data:`BATCH`; ``pace``:
    events/s at most (a batch waits for its time), ``None``: back to back.
    """
    started = time.perf_counter()
    for i in range(0, len(events), BATCH):
        if pace is not None:
            delay = started + i / pace - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        model.process_many(events[i:i + BATCH])
    return time.perf_counter() - started


def run(config: str, lifecycle_count: int, suspects: int, pace: float | None = None
        ) -> dict[str, float]:
    """One measurement: events/s of ``config`` and what the repairer did meanwhile."""
    model = make_model()
    now = time.time()
    # Tasks in progress a gap left behind: seen sent, never heard of again.
    model.process_many([e for e in lifecycles(suspects, now - 3600)
                        if e["type"] == "task-sent"])
    events = lifecycles(lifecycle_count, now)
    health = Health()
    repairer = None
    scan = 0.0
    if config != "baseline":
        interval = DEFAULT_REPAIR_INTERVAL if config == "repair, default" else 0.01
        repairer = Repairer(model, health, backend=SlowBackend(0.0002),
                            workers=SlowWorkers(0.05), interval=interval,
                            batch=DEFAULT_REPAIR_BATCH, clock=time.monotonic)
        started = time.perf_counter()
        model.in_progress()
        scan = time.perf_counter() - started
        health.set_broker_connected(True)
        health.set_broker_connected(False)
        health.set_broker_connected(True, reconnected=True)  # a gap: every task is suspect
        repairer.run_round()  # collects the suspects (first checks one interval later)
        repairer.table.add(repairer.table.ids(), "gap", time.monotonic())  # due now
        repairer.start()
    seconds = ingest(model, events, pace)
    repairs = 0.0
    if repairer is not None:
        repairer.stop(10)
        repairs = float(sum(health.snapshot().repairs.values()))
    return {"events_per_second": len(events) / seconds, "repairs": repairs, "scan": scan}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lifecycles", type=int, default=50_000)
    parser.add_argument("--suspects", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    configs = ("baseline", "repair, default", "repair, stressed", "stressed, paced")
    results: dict[str, list[dict[str, float]]] = {c: [] for c in configs}
    for _ in range(args.runs):
        for config in configs[:3]:
            results[config].append(run(config, args.lifecycles, args.suspects))
        base_rate = results["baseline"][-1]["events_per_second"]
        results[configs[3]].append(run("repair, stressed", args.lifecycles, args.suspects,
                                       pace=base_rate / 2))
    base = statistics.median(r["events_per_second"] for r in results["baseline"])
    print(f"{args.lifecycles * 4:,} events per run, {args.suspects:,} tasks in progress to "
          f"repair, {args.runs} runs (median)")
    print(f"{'configuration':<18} {'events/s':>10} {'× baseline':>11} {'repairs':>9} "
          f"{'gap scan':>9}")
    for config in configs:
        rate = statistics.median(r["events_per_second"] for r in results[config])
        repairs = statistics.median(r["repairs"] for r in results[config])
        scan = max(r["scan"] for r in results[config])
        print(f"{config:<18} {rate:>10,.0f} {rate / base:>11.2f} {repairs:>9,.0f} "
              f"{scan * 1000:>7.1f}ms")


if __name__ == "__main__":
    main()
