"""Throughput of the SQL history writer: synthetic task lifecycles through a real HistoryWriter.

Each lifecycle is four events as Celery sends them (task-sent, task-received, task-started,
task-succeeded), so N lifecycles are 4·N events and N rows. The writer thread runs while the
events are submitted as fast as one thread can; the clock stops when ``flush`` returns, i.e.
when every row is committed. Two runs per backend: *merged* (all events at once: each row is
inserted once, its four events merged in memory) and *phased* (each event type in its own
flush: one insert and three updates per row, the worst case). Printed: wall time, rows/s,
events/s, the cost of ``submit`` on the calling (event) thread, and the CPU time of this process
(``submit`` plus the writer thread; the PostgreSQL server's own work is not in it) per 100k
events — the figure other processes on the machine disturb least.

    python benchmarks/history.py                      # 50,000 lifecycles, SQLite and PostgreSQL
    python benchmarks/history.py -n 10000 --backend sqlite
    python benchmarks/history.py -n 10000 --backend sqlite --prefill 120000 --batch-size 500

PostgreSQL: a temporary database is created through ``--pg-admin`` (the ``postgres`` database)
and dropped afterwards. SQLite: a temporary file in WAL mode (the default configuration).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy import Engine, func, select
from sqlalchemy.engine import make_url

from exporter.history import DEFAULT_BATCH_SIZE, HistoryWriter, create_history_engine, upgrade
from exporter.history.orm import TASK_EXECUTION

T0 = 1_700_000_000.0


def lifecycle_events(count: int) -> list[dict]:
    events: list[dict] = []
    for i in range(count):
        task_id = str(uuid.uuid4())
        t = T0 + i * 0.001
        common = {"uuid": task_id, "utcoffset": 0, "pid": 100, "clock": i}
        events += [
            {"type": "task-sent", "timestamp": t, "hostname": "web-1", "name": "bench.add",
             "args": f"({i}, 2)", "kwargs": "{}", "retries": 0, "eta": None, "expires": None,
             "queue": "default", "exchange": "", "routing_key": "default", "root_id": task_id,
             "parent_id": None, **common},
            {"type": "task-received", "timestamp": t + 0.01, "hostname": "celery@w1",
             "name": "bench.add", "args": f"({i}, 2)", "kwargs": "{}", "retries": 0,
             "eta": None, "expires": None, "root_id": task_id, "parent_id": None, **common},
            {"type": "task-started", "timestamp": t + 0.02, "hostname": "celery@w1", **common},
            {"type": "task-succeeded", "timestamp": t + 0.05, "hostname": "celery@w1",
             "result": str(i + 2), "runtime": 0.03, **common},
        ]
    return events


@contextmanager
def sqlite_url() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="jobmon-bench-") as directory:
        yield f"sqlite:///{Path(directory) / 'history.sqlite3'}"


@contextmanager
def postgres_url(admin: str) -> Iterator[str]:
    name = f"jobmon_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_url(admin).set(drivername="postgresql+psycopg", database=name) \
            .render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


def prefill(engine: Engine, lifecycles: int) -> None:
    """Store ``lifecycles`` other finished rows first (not measured): how a table that already
    holds rows takes more (its random-key indexes no longer fit SQLite's page cache)."""
    writer = HistoryWriter(engine, capacity=40_001, batch_size=10_000)
    writer.start()
    for start in range(0, lifecycles, 10_000):
        for event in lifecycle_events(min(10_000, lifecycles - start)):
            writer.submit(event)
        if not writer.flush(600.0):
            raise SystemExit(f"prefill: flush timed out: {writer.stats()}")
    writer.stop(10.0)


def run(label: str, url: str, events: list[dict], batch_size: int, phased: bool,
        stored: int = 0) -> None:
    """``phased``: each event type in its own flush (sent …, then received …): every row is
    inserted once and updated three times. Otherwise all events are submitted at once and
    mostly merge in memory before the first write (one insert per row). ``stored``: rows
    written before the measurement (:func:`prefill`).
    """
    engine = create_history_engine(url)
    upgrade(engine)
    prefill(engine, stored)
    writer = HistoryWriter(engine, capacity=len(events) + 1, batch_size=batch_size)
    writer.start()
    phases = [events[k::4] for k in range(4)] if phased else [events]
    submit_seconds = 0.0
    cpu_begin = time.process_time()
    begin = time.perf_counter()
    for phase in phases:
        start = time.perf_counter()
        for event in phase:
            writer.submit(event)
        submit_seconds += time.perf_counter() - start
        if not writer.flush(600.0):
            raise SystemExit(f"{label}: flush timed out: {writer.stats()}")
    elapsed = time.perf_counter() - begin
    cpu = time.process_time() - cpu_begin
    label += (" phased" if phased else " merged") + (f" +{stored}" if stored else "")
    writer.stop(10.0)
    with engine.connect() as connection:
        rows = connection.execute(select(func.count()).select_from(TASK_EXECUTION)
                                  ).scalar_one() - stored
    engine.dispose()
    stats = writer.stats()
    print(f"{label:<20} lifecycles={len(events) // 4} events={len(events)} rows={rows} "
          f"batch_size={batch_size} "
          f"seconds={elapsed:.2f} rows/s={rows / elapsed:.0f} "
          f"events/s={len(events) / elapsed:.0f} "
          f"submit_us={submit_seconds / len(events) * 1e6:.2f} "
          f"cpu_s_per_100k_events={cpu / len(events) * 1e5:.2f} "
          f"row_writes={stats.rows_written} dropped={sum(stats.dropped.values())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--lifecycles", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                        help="rows per transaction (default: the writer's)")
    parser.add_argument("--prefill", type=int, default=0,
                        help="lifecycles stored before the measurement (not measured)")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--pg-admin", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="libpq URL of a database from which a temporary one is created")
    args = parser.parse_args()
    events = lifecycle_events(args.lifecycles)
    for phased in (False, True):
        if args.backend in ("sqlite", "both"):
            with sqlite_url() as url:
                run("sqlite-wal", url, events, args.batch_size, phased, args.prefill)
        if args.backend in ("postgresql", "both"):
            with postgres_url(args.pg_admin) as url:
                run("postgresql", url, events, args.batch_size, phased, args.prefill)


if __name__ == "__main__":
    main()
