"""Memory soak: peak RSS after many task lifecycles through the model and the history writer.

    python benchmarks/memory.py [--lifecycles 1000000] [--rate 5000] [--names 200] ...

Feeds complete lifecycles (task-sent, -received, -started, -succeeded; 5 % -failed), with
worker heartbeats, through the real ``Model`` (default task index of 100,000 tasks) and the
real history writer on a SQLite file (default queue size; in a child process as ``serve``'s
default, ``--history-writer thread`` in this process), in batches as the consumer delivers
them, at ``--rate`` lifecycles per second (5,000 = 20,000 events/s), and renders
``/metrics`` (serve's ``MetricsEndpoint``) every 100,000 lifecycles. Prints RSS along the way
and the peak: bounded structures (task index, history queue) keep it flat; a per-task leak
would grow it linearly. The baseline line is the process after importing everything, before
any event. With the writer process, RSS is this process's plus the child's (``+`` the child's
share shown apart), and the peak is the sum of both peaks.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
import uuid
from pathlib import Path

from exporter.config import (
    DEFAULT_HISTORY_QUEUE_SIZE,
    DEFAULT_QUEUE_WAIT_BUCKETS,
    DEFAULT_RUNTIME_BUCKETS,
)
from exporter.history import HistoryWriter, create_history_engine, upgrade
from exporter.history.process import WriterProcess
from exporter.metrics.scrape import Scrape, exporter_sources
from exporter.state.health import Health
from exporter.state.model import Model


def child_mb(pid: int | None, field: str = "VmRSS") -> float:
    """``field`` of the writer process's ``/proc/<pid>/status`` in MB (0 without one)."""
    if pid is None:
        return 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def lifecycle(i: int, now: float, names: int, queues: int, workers: int) -> list[dict]:
    task_id = str(uuid.uuid4())
    name, queue = f"app.tasks.task_{i % names}", f"queue{i % queues}"
    worker = f"worker{i % workers}@host"
    base = {"uuid": task_id, "pid": 1, "clock": i, "utcoffset": 0}
    events = [
        {**base, "type": "task-sent", "timestamp": now, "hostname": "producer@host",
         "name": name, "queue": queue, "routing_key": queue, "args": f"({i}, 2)",
         "kwargs": "{}", "retries": 0, "eta": None, "expires": None},
        {**base, "type": "task-received", "timestamp": now + 0.001, "hostname": worker,
         "name": name, "args": f"({i}, 2)", "kwargs": "{}", "retries": 0},
        {**base, "type": "task-started", "timestamp": now + 0.002, "hostname": worker},
    ]
    if i % 20 == 0:
        events.append({**base, "type": "task-failed", "timestamp": now + 0.05,
                       "hostname": worker, "exception": "ValueError('boom')",
                       "traceback": "Traceback (most recent call last):\nValueError: boom\n"})
    else:
        events.append({**base, "type": "task-succeeded", "timestamp": now + 0.05,
                       "hostname": worker, "runtime": 0.048, "result": str(i + 2)})
    return events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lifecycles", type=int, default=1_000_000)
    parser.add_argument("--names", type=int, default=200)
    parser.add_argument("--queues", type=int, default=10)
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--rate", type=float, default=5000.0, help="lifecycles per second")
    parser.add_argument("--history-writer", choices=("process", "thread"), default="process")
    args = parser.parse_args()
    url = f"sqlite:///{tempfile.mkdtemp(prefix='jobmon-soak-')}/history.sqlite3"
    upgrade(url)
    writer: HistoryWriter | WriterProcess
    if args.history_writer == "thread":
        writer = HistoryWriter(create_history_engine(url), capacity=DEFAULT_HISTORY_QUEUE_SIZE)
    else:
        writer = WriterProcess(url, capacity=DEFAULT_HISTORY_QUEUE_SIZE, log_level="WARNING")
    model = Model(runtime_buckets=DEFAULT_RUNTIME_BUCKETS,
                  queue_wait_buckets=DEFAULT_QUEUE_WAIT_BUCKETS, max_tasks=100_000,
                  max_task_names=1000, worker_timeout=30, worker_retention=86400,
                  history=writer.submit)
    metrics = Scrape(exporter_sources("celery_", model, Health(), lambda: None, writer.stats),
                     "celery_")
    writer.start()
    pid = None
    if isinstance(writer, WriterProcess):
        time.sleep(2.0)  # the child's imports
        pid = writer.pid
    print(f"baseline (imports, empty model): {rss_mb():.1f} MB + writer process "
          f"{child_mb(pid):.1f} MB")
    started = time.perf_counter()
    batch: list[dict] = []
    for i in range(args.lifecycles):
        now = time.time()
        batch.extend(lifecycle(i, now, args.names, args.queues, args.workers))
        if i % args.workers == 0:
            batch.append({"type": "worker-heartbeat", "timestamp": now, "pid": 1,
                          "hostname": f"worker{(i // args.workers) % args.workers}@host",
                          "active": 1, "processed": i, "freq": 2.0})
        if len(batch) >= 1000:
            model.process_many(batch)
            batch = []
            ahead = (i + 1) / args.rate - (time.perf_counter() - started)
            if ahead > 0:
                time.sleep(ahead)
        if (i + 1) % 100_000 == 0:
            size = len(metrics.render())
            stats = writer.stats()
            print(f"{i + 1:>9} lifecycles  RSS {rss_mb():6.1f} + {child_mb(pid):5.1f} MB"
                  f"  index {len(model.index):>6}"
                  f"  history queue {stats.queue_depth:>6}  rows {stats.rows_written:>8}"
                  f"  dropped {sum(stats.dropped.values()):>7}  /metrics {size / 1e6:.1f} MB"
                  f"  {time.perf_counter() - started:5.0f} s", flush=True)
    model.process_many(batch)
    child_peak = child_mb(pid, "VmHWM")
    writer.stop(300)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak = own + child_peak
    print(f"peak RSS {peak:.1f} MB ({own:.1f} + writer process {child_peak:.1f}) after "
          f"{args.lifecycles} lifecycles "
          f"({args.names} names, {args.queues} queues, {args.workers} workers); "
          f"history rows {writer.stats().rows_written}")


if __name__ == "__main__":
    main()
