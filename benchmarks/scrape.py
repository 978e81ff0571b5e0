"""Scrape benchmark: render `/metrics` for a large label set, next to prometheus-client objects.

    python benchmarks/scrape.py [--names 500] [--queues 10] [--workers 50] [--runs 20]

Fills a Model with ``names × queues`` label pairs, each with every lifecycle counter, the
exceptions counter, full runtime (SUCCESS and FAILURE) and queue-wait histograms and the running
gauge, plus ``--workers`` workers; then times ``generate_latest`` over the ModelCollector. The
baseline, measured in the same run, is the same series held in prometheus-client's own
Counter/Histogram/Gauge objects (what a conventional exporter renders). No broker is involved:
the collector never does I/O.
"""

from __future__ import annotations

import argparse
import statistics
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from exporter.collectors import ModelCollector
from exporter.config import DEFAULT_QUEUE_WAIT_BUCKETS, DEFAULT_RUNTIME_BUCKETS
from exporter.model import Model


def filled_model(names: int, queues: int, workers: int) -> Model:
    model = Model(runtime_buckets=DEFAULT_RUNTIME_BUCKETS,
                  queue_wait_buckets=DEFAULT_QUEUE_WAIT_BUCKETS, max_tasks=10_000,
                  max_task_names=names, worker_timeout=1e9, worker_retention=1e9)
    now = time.time()
    events = []
    for w in range(workers):
        events.append({"type": "worker-heartbeat", "hostname": f"w{w}@host", "timestamp": now,
                       "active": 1, "processed": 10, "freq": 2.0})
    i = 0
    for n in range(names):
        for q in range(queues):
            for outcome in ("ok", "fail"):
                for runtime in DEFAULT_RUNTIME_BUCKETS[::3]:
                    i += 1
                    uuid = f"t{i}"
                    base = {"uuid": uuid, "hostname": f"w{i % workers}@host"}
                    events.append({**base, "type": "task-sent", "timestamp": now,
                                   "name": f"app.tasks.task_{n}", "queue": f"queue{q}"})
                    events.append({**base, "type": "task-received", "timestamp": now,
                                   "name": f"app.tasks.task_{n}"})
                    events.append({**base, "type": "task-started", "timestamp": now + runtime})
                    if outcome == "ok":
                        events.append({**base, "type": "task-succeeded", "runtime": runtime,
                                       "timestamp": now + 2 * runtime})
                    else:
                        events.append({**base, "type": "task-failed",
                                       "timestamp": now + 2 * runtime,
                                       "exception": f"E{n % 5}Error('x')"})
    for start in range(0, len(events), 5000):
        model.process_many(events[start:start + 5000])
    return model


def baseline_registry(names: int, queues: int, workers: int) -> CollectorRegistry:
    registry = CollectorRegistry()
    labels = ["name", "queue_name"]
    counters = [Counter(f"celery_task_{v}", "x", labels, registry=registry)
                for v in ("sent", "received", "started", "succeeded", "failed", "retried",
                          "revoked", "rejected")]
    exceptions = Counter("celery_task_exceptions", "x", ["name", "exception"], registry=registry)
    runtime = Histogram("celery_task_runtime_seconds", "x", labels + ["state"],
                        buckets=DEFAULT_RUNTIME_BUCKETS, registry=registry)
    wait = Histogram("celery_task_queue_wait_seconds", "x", labels,
                     buckets=DEFAULT_QUEUE_WAIT_BUCKETS, registry=registry)
    running = Gauge("celery_task_running", "x", labels, registry=registry)
    up = Gauge("celery_worker_up", "x", ["hostname"], registry=registry)
    for n in range(names):
        for q in range(queues):
            values = (f"app.tasks.task_{n}", f"queue{q}")
            for counter in counters:
                counter.labels(*values).inc()
            exceptions.labels(values[0], f"E{n % 5}Error").inc()
            for state in ("SUCCESS", "FAILURE"):
                for v in DEFAULT_RUNTIME_BUCKETS[::3]:
                    runtime.labels(*values, state).observe(v)
            for v in DEFAULT_QUEUE_WAIT_BUCKETS[::3]:
                wait.labels(*values).observe(v)
            running.labels(*values).set(0)
    for w in range(workers):
        up.labels(f"w{w}@host").set(1)
    return registry


def time_scrapes(registry: CollectorRegistry, runs: int) -> tuple[float, int]:
    times = []
    size = 0
    for _ in range(runs):
        start = time.perf_counter()
        size = len(generate_latest(registry))
        times.append(time.perf_counter() - start)
    return statistics.median(times), size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--names", type=int, default=500)
    parser.add_argument("--queues", type=int, default=10)
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    model = filled_model(args.names, args.queues, args.workers)
    ours = CollectorRegistry(auto_describe=False)
    ours.register(ModelCollector(model.snapshot, "celery_", {"version": "bench",
                                                             "celery_version": "bench"}))
    base = baseline_registry(args.names, args.queues, args.workers)
    ours_median, ours_size = time_scrapes(ours, args.runs)
    base_median, base_size = time_scrapes(base, args.runs)
    start = time.perf_counter()
    for _ in range(args.runs):
        model.snapshot()
    snapshot_ms = (time.perf_counter() - start) / args.runs * 1000
    print(f"{args.names} names x {args.queues} queues, {args.workers} workers, "
          f"median of {args.runs} scrapes")
    print(f"{'registry':38} {'median ms':>10} {'bytes':>10} {'x base':>7}")
    print(f"{'prometheus-client objects (baseline)':38} {base_median * 1000:>10.1f} "
          f"{base_size:>10} {1.0:>7.2f}")
    print(f"{'celery-jobmon ModelCollector':38} {ours_median * 1000:>10.1f} {ours_size:>10} "
          f"{ours_median / base_median:>7.2f}")
    print(f"model.snapshot() alone (time the event thread waits): {snapshot_ms:.1f} ms")


if __name__ == "__main__":
    main()
