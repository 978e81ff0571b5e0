"""Scrape benchmark: render `/metrics` for a large label set, next to prometheus-client objects.

    python benchmarks/scrape.py [--names 500] [--queues 10] [--workers 50] [--runs 20]

Fills a Model with ``names × queues`` label pairs, each with every lifecycle counter, the
exceptions counter, full runtime (SUCCESS and FAILURE) and queue-wait histograms and the running
gauge, plus ``--workers`` workers; then times serve's ``/metrics`` renderer
(``MetricsEndpoint.render``: model snapshot, cached model exposition, poller/history collectors)
in three situations:

- *cold*: the first scrape (nothing cached: every series rendered);
- *steady*: nothing changed since the last scrape;
- *busy*: ``--changed`` task lifecycles (spread over random label pairs, so that many series
  change) applied between two scrapes — what a scrape sees on a busy cluster;

and the steady render plus gzip at serve's level (what a Prometheus scrape, which asks for
gzip, costs).

The baseline, measured in the same run, is the same series held in prometheus-client's own
Counter/Histogram/Gauge objects rendered by ``generate_latest`` (what a conventional exporter
does on every scrape, changed or not). No broker is involved: the renderer never does I/O.
"""

from __future__ import annotations

import argparse
import gzip
import random
import statistics
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from exporter.config import DEFAULT_QUEUE_WAIT_BUCKETS, DEFAULT_RUNTIME_BUCKETS
from exporter.http import GZIP_LEVEL
from exporter.metrics.scrape import Scrape, exporter_sources
from exporter.state.health import Health
from exporter.state.model import Model


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
                          "revoked", "rejected", "lost")]
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


def lifecycle_events(i: int, name: int, queue: int, workers: int, now: float) -> list[dict]:
    """One successful task lifecycle of ``app.tasks.task_<name>`` on ``queue<queue>``."""
    base = {"uuid": f"busy{i}", "hostname": f"w{i % workers}@host"}
    return [{**base, "type": "task-sent", "timestamp": now, "name": f"app.tasks.task_{name}",
             "queue": f"queue{queue}"},
            {**base, "type": "task-received", "timestamp": now,
             "name": f"app.tasks.task_{name}"},
            {**base, "type": "task-started", "timestamp": now + 0.01},
            {**base, "type": "task-succeeded", "timestamp": now + 0.2, "runtime": 0.19}]


def median_ms(render: Callable[[], bytes], runs: int,
              between: Callable[[], None] | None = None) -> tuple[float, int]:
    """Median milliseconds of ``render()`` over ``runs`` calls (``between()`` untimed before
    each), and the size of the last output in bytes.
    """
    times = []
    size = 0
    for _ in range(runs):
        if between is not None:
            between()
        start = time.perf_counter()
        size = len(render())
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--names", type=int, default=500)
    parser.add_argument("--queues", type=int, default=10)
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--changed", type=int, default=1000,
                        help="task lifecycles applied between two busy scrapes")
    args = parser.parse_args()
    model = filled_model(args.names, args.queues, args.workers)

    def endpoint() -> Scrape:
        return Scrape(exporter_sources("celery_", model, Health(), lambda: None, None), "celery_")

    # Each cold scrape on an endpoint made beforehand and dropped afterwards, both untimed: an
    # exporter's first scrape neither builds the endpoint nor frees a previous one's caches
    # (360,000 series' texts; freeing them took 20-60 ms when it was timed with the render).
    fresh: list[Scrape] = []

    def new_endpoint() -> None:
        fresh.clear()
        fresh.append(endpoint())

    cold_ms, size = median_ms(lambda: fresh[0].render(), max(3, args.runs // 4),
                              between=new_endpoint)
    fresh.clear()
    ours = endpoint()
    ours.render()
    steady_ms, _ = median_ms(ours.render, args.runs)
    gzip_ms, gzip_size = median_ms(lambda: gzip.compress(ours.render(), GZIP_LEVEL), args.runs)
    rng = random.Random(7)
    done = [0]

    def busy() -> None:
        now = time.time()
        events = []
        for _ in range(args.changed):
            done[0] += 1
            events += lifecycle_events(done[0], rng.randrange(args.names),
                                       rng.randrange(args.queues), args.workers, now)
        model.process_many(events)

    busy_ms, _ = median_ms(ours.render, args.runs, busy)
    base = baseline_registry(args.names, args.queues, args.workers)
    base_ms, base_size = median_ms(lambda: generate_latest(base), max(3, args.runs // 4))
    snapshot_ms, _ = median_ms(lambda: b"" if model.snapshot() else b"", args.runs)
    samples = sum(1 for line in ours.render().splitlines() if not line.startswith(b"#"))
    print(f"{args.names} names x {args.queues} queues, {args.workers} workers: {samples:,} "
          f"samples, {size / 1e6:.1f} MB; median of {args.runs} scrapes")
    print(f"{'renderer':58} {'median ms':>10} {'x base':>7}")
    rows = [("prometheus-client objects, generate_latest (baseline)", base_ms),
            ("celery-jobmon /metrics, cold (first scrape)", cold_ms),
            ("celery-jobmon /metrics, steady (nothing changed)", steady_ms),
            (f"  the same + gzip level {GZIP_LEVEL} ({gzip_size / 1e6:.2f} MB sent)", gzip_ms),
            (f"celery-jobmon /metrics, busy ({args.changed:,} lifecycles between)", busy_ms)]
    for label, ms in rows:
        print(f"{label:58} {ms:>10.1f} {ms / base_ms:>7.3f}")
    print(f"baseline output {base_size / 1e6:.1f} MB; model.snapshot() alone (the time the "
          f"event thread can wait for a scrape): {snapshot_ms:.1f} ms")


if __name__ == "__main__":
    main()
