"""What the SQL history costs the exporter per event, in one process, without the broker.

    python benchmarks/history_cost.py [--tasks 2000] [--copies 10] [--batch 100] [--rounds 3]
    python benchmarks/history_cost.py --profile      # + cProfile of both threads

The burst of :mod:`ingest` (Celery's own events, rendered once through its dispatcher on a
private ``redis-server``, replayed ``--copies`` times with fresh task ids) is decoded once with
the Redis fast path's :func:`~exporter.events.redis_stream.decode_payload`; then the decoded
events go through ``Model.process_many`` in batches of ``--batch`` (the fast path hands the
model what one socket read gave), twice per round: without history, and with a real
``HistoryWriter`` on a fresh SQLite file (WAL, the default configuration) until ``flush``
returns. Printed per round: CPU seconds of the whole process (every thread:
``time.process_time``) per 100k events for each, their ratio, and the writer thread's own
share (``time.thread_time`` inside it). The decode and the socket are left out: this is the
model's and the history's cost alone, the part target 2 of issue 17 is about.

``--profile`` runs one more pass with history under ``cProfile`` in the event thread and in
the writer thread and prints each one's top functions by own time.
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import io
import pstats
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eventload import RedisServer, prepare, render  # noqa: E402

from exporter.config import DEFAULT_QUEUE_WAIT_BUCKETS, DEFAULT_RUNTIME_BUCKETS  # noqa: E402
from exporter.events.redis_stream import accept_content, decode_payload  # noqa: E402
from exporter.history import DEFAULT_BATCH_SIZE, HistoryWriter, create_history_engine, upgrade  # noqa: E402
from exporter.state.model import Model  # noqa: E402


def decoded_events(tasks: int, copies: int) -> list[dict[str, Any]]:
    """The burst's events as the Redis fast path decodes them, in publication order."""
    server = RedisServer()
    try:
        template = render(server, tasks=tasks)
    finally:
        server.stop()
    accept = accept_content(["json"])
    return [event for messages in prepare(template, copies) for _, data in messages
            for event in decode_payload(data, accept)]


def new_model(history: Any) -> Model:
    """A model as ``serve`` builds it with its defaults."""
    return Model(runtime_buckets=DEFAULT_RUNTIME_BUCKETS,
                 queue_wait_buckets=DEFAULT_QUEUE_WAIT_BUCKETS, max_tasks=100_000,
                 max_task_names=1000, worker_timeout=60.0, worker_retention=86400.0,
                 history=history)


def feed(model: Model, events: list[dict[str, Any]], batch: int) -> None:
    for start in range(0, len(events), batch):
        model.process_many(events[start:start + batch])


def run_once(events: list[dict[str, Any]], batch: int, history: bool, writer_batch: int,
             profiles: tuple[cProfile.Profile, cProfile.Profile] | None = None
             ) -> tuple[float, float]:
    """CPU seconds of the process for one pass, and of the writer thread (0 without history).
    The events are copied first (the model adds keys to them), outside the measurement.
    """
    events = copy.deepcopy(events)
    if not history:
        model = new_model(None)
        cpu0 = time.process_time()
        feed(model, events, batch)
        return time.process_time() - cpu0, 0.0
    with tempfile.TemporaryDirectory(prefix="jobmon-bench-") as directory:
        engine = create_history_engine(f"sqlite:///{directory}/history.db")
        upgrade(engine)
        # No drop (a queue as long as the burst): all of the cost.
        writer = HistoryWriter(engine, capacity=len(events), batch_size=writer_batch)
        writer_cpu = [0.0]
        run = writer.run

        def measured_run() -> None:
            start = time.thread_time()
            try:
                if profiles is not None:
                    profiles[1].runcall(run)
                else:
                    run()
            finally:
                writer_cpu[0] = time.thread_time() - start

        writer.run = measured_run  # type: ignore[method-assign]
        writer.start()
        model = new_model(writer.submit)
        cpu0 = time.process_time()
        if profiles is not None:
            profiles[0].runcall(feed, model, events, batch)
        else:
            feed(model, events, batch)
        if not writer.flush(300):
            raise RuntimeError("the history writer did not flush")
        cpu = time.process_time() - cpu0
        writer.stop(60)
        stats = writer.stats()
        engine.dispose()
        if stats.dropped and any(stats.dropped.values()):
            raise RuntimeError(f"history dropped events: {stats.dropped}")
        return cpu, writer_cpu[0]


def top(profile: cProfile.Profile, title: str, limit: int) -> None:
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    total = stats.total_tt  # type: ignore[attr-defined]
    stats.sort_stats("tottime").print_stats(limit)
    print(f"--- {title}: {total:.2f} s profiled")
    print("\n".join(line for line in out.getvalue().splitlines()[6:] if line.strip()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                        help="the history writer's rows per transaction")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    events = decoded_events(args.tasks, args.copies)
    per = 1e5 / len(events)
    print(f"{len(events)} events, batches of {args.batch}; CPU s per 100k events")
    print(f"{'round':>5} {'no history':>11} {'history':>8} {'x':>5} {'writer thread':>14}")
    ratios = []
    for k in range(args.rounds):
        bare, _ = run_once(events, args.batch, False, args.batch_size)
        full, writer = run_once(events, args.batch, True, args.batch_size)
        ratios.append(full / bare)
        print(f"{k + 1:>5} {bare * per:>11.3f} {full * per:>8.3f} {full / bare:>5.2f} "
              f"{writer * per:>14.3f}")
    print(f"median history/no-history: {statistics.median(ratios):.2f}")
    if args.profile:
        # Thread CPU time, not wall time: the two threads wait for each other at the GIL.
        profiles = (cProfile.Profile(time.thread_time), cProfile.Profile(time.thread_time))
        run_once(events, args.batch, True, args.batch_size, profiles=profiles)
        thread = threading.current_thread().name
        top(profiles[0], f"event thread ({thread}): model + submit", args.top)
        top(profiles[1], "writer thread: merge + SQL", args.top)


if __name__ == "__main__":
    main()
