"""The series budget of README "At scale", counted from the exporter's own ``/metrics``
renderer: per (task name, queue) pair ``11 + 2 × (R + 3) + (W + 3)`` task series for R runtime
and W queue-wait bucket bounds, one per (name, exception class), and ``--task-hostname-label``
multiplying all but ``celery_task_sent_total`` by the workers.
"""

from __future__ import annotations

from collections import Counter

from exporter.config import DEFAULT_QUEUE_WAIT_BUCKETS, DEFAULT_RUNTIME_BUCKETS
from exporter.metrics.scrape import Scrape, exporter_sources
from exporter.state.health import Health
from exporter.state.model import Model

NOW = 1_790_000_000.0


def task_series(names: int, queues: int, workers: int, *, hostname_label: bool = False,
                runtime: tuple[float, ...] = DEFAULT_RUNTIME_BUCKETS,
                queue_wait: tuple[float, ...] = DEFAULT_QUEUE_WAIT_BUCKETS) -> Counter[str]:
    """Samples per ``celery_task_*`` name after every kind of task event on every pair."""
    model = Model(runtime_buckets=runtime, queue_wait_buckets=queue_wait, max_tasks=100_000,
                  max_task_names=1000, worker_timeout=1e9, worker_retention=1e9,
                  hostname_label=hostname_label, clock=lambda: NOW + 1)
    events = [{"type": "worker-heartbeat", "hostname": f"w{w}@h", "timestamp": NOW,
               "active": 0, "processed": 0, "freq": 2.0} for w in range(workers)]
    i = 0
    for n in range(names):
        for q in range(queues):
            for w in range(workers):
                for end in ("task-succeeded", "task-failed", "task-retried", "task-revoked",
                            "task-rejected", "task-cancelled"):
                    i += 1
                    task = {"uuid": f"t{i}", "hostname": f"w{w}@h"}
                    events += [
                        {**task, "type": "task-sent", "timestamp": NOW, "name": f"app.t{n}",
                         "queue": f"q{q}"},
                        {**task, "type": "task-received", "timestamp": NOW, "name": f"app.t{n}"},
                    ]
                    if end in ("task-succeeded", "task-failed", "task-retried", "task-cancelled"):
                        events.append({**task, "type": "task-started", "timestamp": NOW + 0.1})
                    events.append({**task, "type": end, "timestamp": NOW + 0.2, "runtime": 0.1,
                                   "exception": "ValueError('x')"})
    model.process_many(events)
    sources = exporter_sources("celery_", model, Health(), lambda: None, None,
                               hostname_label=hostname_label)
    counts: Counter[str] = Counter()
    for line in Scrape(sources, "celery_").render().decode().splitlines():
        if line.startswith("celery_task_"):
            counts[line.split("{")[0].split(" ")[0]] += 1
    return counts


def test_a_pair_has_74_task_series_with_the_default_buckets():
    counts = task_series(1, 1, 1)
    assert counts["celery_task_exceptions_total"] == 1
    assert counts["celery_task_runtime_seconds_bucket"] == 2 * 19
    assert counts["celery_task_queue_wait_seconds_bucket"] == 19
    assert sum(counts.values()) - counts["celery_task_exceptions_total"] == 74
    assert sum(task_series(2, 3, 1).values()) == 6 * 74 + 2


def test_fewer_bounds_cut_three_series_per_pair_each():
    counts = task_series(1, 1, 1, runtime=(0.1, 1, 10, 60, 600), queue_wait=(1, 10, 60, 600))
    assert sum(counts.values()) - counts["celery_task_exceptions_total"] == 34


def test_the_hostname_label_multiplies_a_pair_by_its_workers():
    counts = task_series(1, 1, 3, hostname_label=True)
    assert counts["celery_task_sent_total"] == 1
    assert sum(counts.values()) == 1 + 73 * 3 + 1
