"""Per task name figures of the finished executions of each hour and each day, so statistics
over days read a few thousand rows instead of every execution (issue 15: the Statistics page
of a week took 1.8-3.4 s over 1,000,000 rows; the exact 95th percentile sorted every run time
of the window).

Tables (:mod:`exporter.history.orm`): ``task_stats_period`` holds, per period (an hour, or a
UTC day of 24 hours) and task name, the count of finished executions (by ``finished_at``),
SUCCESS and FAILURE among them, and over those with a run time their number, sum, min, max and
a histogram of log buckets (:func:`bucket_of`). ``task_stats_built`` lists the periods whose
rows are current.

Staying right: a period not listed in ``task_stats_built`` is read from ``task_execution``
itself, so the figures are only used while they match the rows. Whatever changes a finished
execution's name, state, finish time or run time forgets its hour and its day in the same
transaction: the history writer's batch (:func:`forget`, called by
:func:`exporter.history.store.upsert_rows` once per batch with the finish times before and
after), and for deletes — retention, ``history prune`` from another process, a hand-written
``DELETE`` — a trigger on ``task_execution`` (:func:`trigger_ddl`, created by migration 0005).
Inserts and updates have no trigger because it doubled SQLite's cost of writing a row (a
statement journal per statement that may fire one: 7 → 15 µs CPU a row even with a trigger
whose ``WHEN`` is false); the action API only inserts PENDING rows and changes action
columns. :func:`build` (the history writer calls it every minute) builds the missing closed
hours of the last :data:`HORIZON_HOURS` from the rows, newest first, then the days whose 24
hours are built from those hours; each period in one transaction that no writer can
interleave with (SQLite ``BEGIN IMMEDIATE``; PostgreSQL ``LOCK TABLE task_execution IN SHARE
MODE``, which waits for the writers in progress and holds new ones back for the few
milliseconds a period takes). Measured on 1,000,000 rows over 30 days (SQLite): 9 ms an hour.

What is exact and what is not (:func:`window_figures`): counts, SUCCESS/FAILURE, min and max
are exact; the average adds exact per-hour sums (``math.fsum``), exact to the last bits of a
double. The 95th percentile is exact when every run time of the name comes from rows read one
by one, or when it is the name's min or max (fewer than 20 run times); else it comes from the
buckets: :data:`STEPS` buckets per doubling, and the figure given is the geometric middle of
the bucket holding the nearest-rank value (narrowed to the exact min and max), so the true
value is within a factor ``1 + P95_RELATIVE_ERROR`` (1.044) of it either way. Run times under
:data:`LOW` (about 1 µs, including 0 and negative ones from skewed clocks) share bucket 0: a
p95 there is given as its upper end, within 1 µs.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    text,
)

from exporter.history.db import SQLITE_BUSY_TIMEOUT, WRITE_INTENT
from exporter.history.orm import TASK_EXECUTION, TASK_STATS_BUILT, TASK_STATS_PERIOD

log = logging.getLogger(__name__)

_TABLE: Table = TASK_EXECUTION  # type: ignore[assignment]
_C = _TABLE.c
_PERIOD = TASK_STATS_PERIOD.c
_BUILT = TASK_STATS_BUILT.c
#: Seconds per hour; hours per day (a day's period starts at an hour divisible by it).
HOUR = 3600
DAY_HOURS = 24
#: Closed hours :func:`build` keeps built: 35 days back from now (older windows are
#: read from the rows; the retention usually removes them).
HORIZON_HOURS = 35 * 24
#: How long a build waits for the database's write lock, seconds: building can wait for the
#: next round, so it never holds the writer thread behind another process's lock (the
#: writer's own batches wait the full busy timeout, and count a failure when it runs out).
BUILD_LOCK_WAIT = 0.2
#: Seconds of work :func:`build` does per call at most (the history writer's thread
#: calls it between batches; a backfill of 30 days goes on over the next calls).
BUILD_BUDGET = 0.05
#: Buckets per doubling of the run time; bucket ``i >= 1`` holds ``[LOW·2^((i-1)/STEPS),
#: LOW·2^(i/STEPS))`` seconds, bucket 0 everything below ``LOW``.
STEPS = 8
LOW = 2.0 ** -20
#: The last bucket (``LOW·2^(TOP/STEPS)`` ≈ 1.1e12 s and above).
TOP = STEPS * 60
#: A p95 read from the buckets is within this relative error of the true one (either way).
P95_RELATIVE_ERROR = 2.0 ** (1 / (2 * STEPS)) - 1
_FIELD = 32  # bits per bucket count in the histogram integer
_EDGES = [LOW * 2.0 ** (i / STEPS) for i in range(TOP + 1)]
_UINT32 = "I" if array("I").itemsize == 4 else "L"

#: Columns of ``task_execution`` the figures depend on (besides ``finished_at``'s hour).
STATS_FIELDS = frozenset({"name", "state", "finished_at", "runtime"})
#: DDL of the trigger forgetting the periods of deleted finished executions, by dialect name
#: (migration 0005 and :func:`ensure_triggers`).
TRIGGERS: dict[str, list[str]] = {
    "sqlite": [
        """CREATE TRIGGER task_stats_stale_delete AFTER DELETE ON task_execution
        WHEN OLD.finished_at IS NOT NULL
        BEGIN
            {old}
        END""",
    ],
    "postgresql": [
        """CREATE FUNCTION task_stats_stale() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF OLD.finished_at IS NOT NULL THEN
                {pg_old}
            END IF;
            RETURN NULL;
        END $$""",
        """CREATE TRIGGER task_stats_stale AFTER DELETE ON task_execution
        FOR EACH ROW EXECUTE FUNCTION task_stats_stale()""",
    ],
}
#: Trigger names, to check and drop them.
TRIGGER_NAMES = {"sqlite": ["task_stats_stale_delete"], "postgresql": ["task_stats_stale"]}


def _stale(row: str, hour: str) -> str:
    # The periods holding `row`.finished_at, by an exact range test: the division gives its
    # hour or, rounded up across an hour's edge, the next one; its day starts at most 23
    # hours before.
    return (f"DELETE FROM task_stats_built WHERE hour BETWEEN {hour} - 24 AND {hour} "
            f"AND hour * 3600.0 <= {row}.finished_at "
            f"AND {row}.finished_at < (hour + hours) * 3600.0;")


def trigger_ddl(dialect: str) -> list[str]:
    """The statements creating the delete trigger on ``dialect`` (``sqlite`` or
    ``postgresql``).

    Raises:
        KeyError: another dialect (the rollup is then not used: see :func:`supported`).

    """
    values = {
        "old": _stale("OLD", "CAST(OLD.finished_at / 3600 AS INTEGER)"),
        "pg_old": _stale("OLD", "CAST(floor(OLD.finished_at / 3600) AS BIGINT)"),
    }
    return [statement.format(**values) for statement in TRIGGERS[dialect]]


def supported(dialect: str) -> bool:
    """Whether the rollup is kept on this dialect (SQLite and PostgreSQL: the trigger)."""
    return dialect in TRIGGERS


#: The statement of :func:`forget`, built once: building it per batch (the IN lists as literal
#: parameters) cost the writer about 0.5 µs a row, more than running it.
_FORGET = delete(TASK_STATS_BUILT).where(or_(
    and_(_BUILT.hours == 1, _BUILT.hour.in_(bindparam("hours", expanding=True))),
    and_(_BUILT.hours == DAY_HOURS, _BUILT.hour.in_(bindparam("days", expanding=True)))))


def forget(connection: Connection, finished: Iterable[float]) -> None:
    """Forget the built hours and days holding any of the ``finished`` times (epoch seconds:
    the finish times, before and after, of the executions a transaction changes), inside the
    caller's transaction: one statement, none when ``finished`` is empty.

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the database failed (the caller rolls back).

    """
    hours = {_last_hour_from(moment) for moment in finished if math.isfinite(moment)}
    if not hours or not supported(connection.dialect.name):
        return
    days = {hour - hour % DAY_HOURS for hour in hours}
    connection.execute(_FORGET, {"hours": sorted(hours), "days": sorted(days)})


def bucket_of(runtime: float) -> int:
    """The histogram bucket of ``runtime`` seconds (see :data:`STEPS`); NaN goes to 0."""
    if not runtime >= LOW:
        return 0
    if runtime >= _EDGES[TOP - 1]:
        return TOP
    index = min(int(math.log2(runtime / LOW) * STEPS) + 1, TOP - 1)
    # log2 may round across an edge: settle on the bucket whose range holds the value.
    while runtime < _EDGES[index - 1]:
        index -= 1
    while runtime >= _EDGES[index]:
        index += 1
    return index


def _encode(histogram: int) -> tuple[int | None, bytes | None]:
    """``(offset, blob)`` of a histogram integer: the counts from its first non-empty bucket
    to its last as little-endian uint32 (``(None, None)`` when empty).
    """
    if not histogram:
        return None, None
    counts = _counts(histogram)
    low = next(i for i, count in enumerate(counts) if count)
    high = len(counts) - next(i for i, count in enumerate(reversed(counts)) if count)
    return low, _counts_bytes(counts[low:high])


def _counts(histogram: int) -> array[int]:
    """Bucket counts of a histogram integer (bucket ``i``'s count in bits ``32i..32i+31``)."""
    counts = array(_UINT32, histogram.to_bytes(_FIELD // 8 * (TOP + 1), "little"))
    if sys.byteorder != "little":
        counts.byteswap()
    return counts


def _counts_bytes(counts: array[int]) -> bytes:
    if sys.byteorder != "little":
        counts = array(_UINT32, counts)
        counts.byteswap()
    return counts.tobytes()


@dataclass
class Figures:
    """What one task name's finished executions add up to, as :func:`window_figures` and
    :func:`build` collect them: exact counts, run time min/max, the run time sums (to be
    added exactly), the run times read row by row (``raw``) and the bucket counts of the rest
    (``histogram``: bucket ``i``'s count in bits ``32i..32i+31``).
    """

    count: int = 0
    succeeded: int = 0
    failed: int = 0
    runtime_count: int = 0
    sums: list[float] = field(default_factory=list)
    minimum: float | None = None
    maximum: float | None = None
    raw: list[float] = field(default_factory=list)
    histogram: int = 0

    def add_row(self, state: str, runtime: float | None) -> None:
        """Count one finished execution (``state``, ``runtime`` seconds or ``None``)."""
        self.count += 1
        if state == "SUCCESS":
            self.succeeded += 1
        elif state == "FAILURE":
            self.failed += 1
        if runtime is not None:
            self.runtime_count += 1
            self.raw.append(runtime)
            self.sums.append(runtime)
            if self.minimum is None or runtime < self.minimum:
                self.minimum = runtime
            if self.maximum is None or runtime > self.maximum:
                self.maximum = runtime

    def add_periods(self, rows: Sequence[Sequence[Any]]) -> None:
        """Add ``task_stats_period`` rows of this name, each ``(name, count, succeeded,
        failed, runtime_count, runtime_sum, runtime_min, runtime_max, histogram_offset,
        histogram)``.
        """
        self.count += sum(row[1] for row in rows)
        self.succeeded += sum(row[2] for row in rows)
        self.failed += sum(row[3] for row in rows)
        timed = [row for row in rows if row[4]]
        if not timed:
            return
        self.runtime_count += sum(row[4] for row in timed)
        self.sums.extend(row[5] for row in timed)
        low, high = min(row[6] for row in timed), max(row[7] for row in timed)
        if self.minimum is None or low < self.minimum:
            self.minimum = low
        if self.maximum is None or high > self.maximum:
            self.maximum = high
        self.histogram += sum(int.from_bytes(row[9], "little") << (_FIELD * row[8])
                              for row in timed)

    def average(self) -> float | None:
        """Mean run time in seconds (``None`` without run times)."""
        return math.fsum(self.sums) / self.runtime_count if self.runtime_count else None

    def p95(self) -> tuple[float | None, bool]:
        """The nearest-rank 95th percentile of the run times (the ``ceil(0.95 n)``-th
        smallest) and whether it is exact (see the module docs for the bound otherwise).
        """
        n = self.runtime_count
        if n == 0 or self.minimum is None or self.maximum is None:
            return None, True
        rank = (n * 95 + 99) // 100
        if rank == n:
            return self.maximum, True
        if rank == 1:
            return self.minimum, True
        if not self.histogram:
            return sorted(self.raw)[rank - 1], True
        total = self.histogram
        extra: dict[int, int] = {}
        for runtime in self.raw:
            bucket = bucket_of(runtime)
            extra[bucket] = extra.get(bucket, 0) + 1
        for bucket, count in extra.items():
            total += count << (_FIELD * bucket)
        bucket = bisect_left(list(accumulate(_counts(total))), rank)
        low = max(_EDGES[bucket - 1] if bucket else -math.inf, self.minimum)
        high = min(_EDGES[bucket] if bucket < TOP else math.inf, self.maximum)
        if low >= high:
            return high, True
        if low <= 0:
            return high, False
        return math.sqrt(low * high), False


def _add_periods(by_name: dict[str | None, Figures], rows: Iterable[Sequence[Any]]) -> None:
    """Add ``task_stats_period`` rows (:meth:`Figures.add_periods`) to their names' figures."""
    grouped: dict[str | None, list[Sequence[Any]]] = {}
    for row in rows:
        grouped.setdefault(row[0], []).append(row)
    for name, members in grouped.items():
        if name not in by_name:
            by_name[name] = Figures()
        by_name[name].add_periods(members)


def _period_row(hours: int, hour: int, name: str | None, figures: Figures) -> dict[str, Any]:
    """The ``task_stats_period`` row of ``figures`` (whose ``raw`` run times, if any, go into
    the histogram with its bucket counts).
    """
    total = figures.histogram
    extra: dict[int, int] = {}
    for runtime in figures.raw:
        bucket = bucket_of(runtime)
        extra[bucket] = extra.get(bucket, 0) + 1
    for bucket, count in extra.items():
        total += count << (_FIELD * bucket)
    offset, blob = _encode(total)
    return {"hours": hours, "hour": hour, "name": name, "count": figures.count,
            "succeeded": figures.succeeded, "failed": figures.failed,
            "runtime_count": figures.runtime_count,
            "runtime_sum": math.fsum(figures.sums) if figures.sums else None,
            "runtime_min": figures.minimum, "runtime_max": figures.maximum,
            "histogram_offset": offset, "histogram": blob}


@contextmanager
def _build_transaction(engine: Engine, *, hold_writers: bool = True) -> Iterator[Connection]:
    """A write transaction that waits at most :data:`BUILD_LOCK_WAIT` for its locks: SQLite's
    write-intent ``BEGIN IMMEDIATE`` with a short busy timeout on this connection (restored
    after), PostgreSQL a ``lock_timeout``; with ``hold_writers`` no writer can interleave with
    it (see the module docs: on PostgreSQL ``LOCK TABLE task_execution IN SHARE MODE``).

    Raises:
        sqlalchemy.exc.OperationalError: the lock was not free in time ("database is locked",
            "canceling statement due to lock timeout"); the build tries again next round.

    """
    wait_ms = int(BUILD_LOCK_WAIT * 1000)
    with engine.connect().execution_options(**{WRITE_INTENT: True}) as connection:
        raw = connection.connection.driver_connection if connection.dialect.name == "sqlite" \
            else None
        if raw is not None:
            raw.execute(f"PRAGMA busy_timeout = {wait_ms}")
        try:
            with connection.begin():
                if raw is None:
                    connection.execute(text(f"SET LOCAL lock_timeout = '{wait_ms}ms'"))
                    if hold_writers:
                        connection.execute(text("LOCK TABLE task_execution IN SHARE MODE"))
                yield connection
        finally:
            if raw is not None:
                raw.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT * 1000)}")


def _replace(connection: Connection, hours: int, hour: int,
             by_name: dict[str | None, Figures]) -> None:
    period = and_(_PERIOD.hours == hours, _PERIOD.hour == hour)
    connection.execute(delete(TASK_STATS_PERIOD).where(period))
    connection.execute(delete(TASK_STATS_BUILT).where(_BUILT.hours == hours,
                                                      _BUILT.hour == hour))
    if by_name:
        connection.execute(insert(TASK_STATS_PERIOD),
                           [_period_row(hours, hour, name, f) for name, f in by_name.items()])
    connection.execute(insert(TASK_STATS_BUILT).values(hours=hours, hour=hour))


def build_hour(engine: Engine, hour: int) -> None:
    """(Re)build ``hour``'s figures from ``task_execution`` and mark it built, in one
    transaction that no writer can interleave with (see the module docs).

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the database did not answer.

    """
    with _build_transaction(engine) as connection:
        by_name: dict[str | None, Figures] = {}
        rows = connection.execute(
            select(_C.name, _C.state, _C.runtime)
            .where(_C.finished_at >= float(hour * HOUR), _C.finished_at < float((hour + 1) * HOUR)))
        for name, state, runtime in rows:
            if name not in by_name:
                by_name[name] = Figures()
            by_name[name].add_row(state, runtime)
        _replace(connection, 1, hour, by_name)


def build_day(engine: Engine, hour: int) -> bool:
    """Build the day starting at ``hour`` (divisible by :data:`DAY_HOURS`) from its hours'
    figures, if all 24 are built (returns whether they were), in one transaction as above.

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the database did not answer.

    """
    with _build_transaction(engine) as connection:
        span = (hour, hour + DAY_HOURS - 1)
        built = connection.execute(select(func.count()).where(
            _BUILT.hours == 1, _BUILT.hour.between(*span))).scalar_one()
        if built < DAY_HOURS:
            return False
        by_name: dict[str | None, Figures] = {}
        rows = connection.execute(select(
            _PERIOD.name, _PERIOD.count, _PERIOD.succeeded, _PERIOD.failed,
            _PERIOD.runtime_count, _PERIOD.runtime_sum, _PERIOD.runtime_min,
            _PERIOD.runtime_max, _PERIOD.histogram_offset, _PERIOD.histogram,
        ).where(_PERIOD.hours == 1, _PERIOD.hour.between(*span)))
        _add_periods(by_name, rows)
        _replace(connection, DAY_HOURS, hour, by_name)
        return True


def ensure_triggers(engine: Engine) -> bool:
    """Create the delete trigger if it is missing (a later SQLite migration in batch mode
    recreates ``task_execution`` without it) and then forget every built hour, since writes
    went unseen meanwhile. Returns whether it had to.

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the database did not answer.

    """
    dialect = engine.dialect.name
    names = TRIGGER_NAMES[dialect]
    if dialect == "sqlite":
        present = text("SELECT count(*) FROM sqlite_master WHERE type = 'trigger' "
                       "AND name IN ('" + "', '".join(names) + "')")
    else:
        present = text("SELECT count(*) FROM pg_trigger WHERE tgname = 'task_stats_stale' "
                       "AND NOT tgisinternal")
    with engine.connect() as connection:
        if connection.execute(present).scalar_one() == len(names):
            return False
    with engine.connect().execution_options(**{WRITE_INTENT: True}) as connection, \
            connection.begin():
        if connection.execute(present).scalar_one() == len(names):
            return False
        if dialect == "postgresql":
            connection.execute(text("DROP FUNCTION IF EXISTS task_stats_stale() CASCADE"))
        else:
            for name in names:
                connection.execute(text(f"DROP TRIGGER IF EXISTS {name}"))
        for statement in trigger_ddl(dialect):
            connection.exec_driver_sql(statement)
        connection.execute(delete(TASK_STATS_BUILT))
    log.warning("history statistics trigger was missing: recreated, hours to be rebuilt")
    return True


def build(engine: Engine, now: float, budget: float = BUILD_BUDGET) -> bool:
    """Build the missing closed hours of the last :data:`HORIZON_HOURS`, newest first, then
    the missing days whose hours are all built, for about ``budget`` seconds; drop the
    figures of periods before the horizon or the oldest execution; recreate the trigger if it
    is missing (:func:`ensure_triggers`). ``now``: epoch seconds. Returns whether missing
    periods remain. Nothing to do on databases other than SQLite and PostgreSQL.

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the database did not answer.

    """
    if not supported(engine.dialect.name):
        return False
    began = time.monotonic()
    ensure_triggers(engine)
    last = math.floor(now / HOUR) - 1
    with engine.connect() as connection:
        oldest = connection.execute(select(func.min(_C.finished_at))).scalar()
        first = last + 1 if oldest is None else max(math.floor(oldest / HOUR),
                                                    last - HORIZON_HOURS + 1)
        built = set(connection.execute(
            select(_BUILT.hours, _BUILT.hour).where(_BUILT.hour >= first - DAY_HOURS,
                                                    _BUILT.hour <= last)).all())
    with _build_transaction(engine, hold_writers=False) as connection:
        connection.execute(delete(TASK_STATS_PERIOD).where(_PERIOD.hour < first))
        connection.execute(delete(TASK_STATS_BUILT).where(_BUILT.hour < first))
    hours = [h for h in range(last, first - 1, -1) if (1, h) not in built]
    first_day = first + (-first) % DAY_HOURS
    days = [d for d in range(last + 1 - DAY_HOURS - (last + 1) % DAY_HOURS, first_day - 1,
                             -DAY_HOURS) if (DAY_HOURS, d) not in built]
    for hour in hours:
        build_hour(engine, hour)
        if time.monotonic() - began >= budget:
            return True
    for number, day in enumerate(days, 1):
        build_day(engine, day)
        if time.monotonic() - began >= budget:
            return number < len(days)
    return False


def _first_hour_from(moment: float) -> int:
    """The first hour starting at or after ``moment`` (exact, whatever the division rounds)."""
    hour = math.ceil(moment / HOUR)
    while hour * HOUR < moment:
        hour += 1
    while (hour - 1) * HOUR >= moment:
        hour -= 1
    return hour


def _last_hour_from(moment: float) -> int:
    """The last hour starting at or before ``moment`` (exact, whatever the division rounds)."""
    hour = math.floor(moment / HOUR)
    while hour * HOUR > moment:
        hour -= 1
    while (hour + 1) * HOUR <= moment:
        hour += 1
    return hour


def _runs(hours: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted hours as inclusive runs of consecutive hours."""
    runs: list[tuple[int, int]] = []
    for hour in hours:
        if runs and runs[-1][1] == hour - 1:
            runs[-1] = (runs[-1][0], hour)
        else:
            runs.append((hour, hour))
    return runs


def _gaps(since: float | None, until: float | None, runs: Iterable[tuple[int, int]]
          ) -> list[tuple[float | None, float | None]]:
    """The parts of ``[since, until)`` outside the runs' hours (``None``: unbounded)."""
    gaps: list[tuple[float | None, float | None]] = []
    start = since
    for first, last in runs:
        if start is None or start < first * HOUR:
            gaps.append((start, float(first * HOUR)))
        start = float((last + 1) * HOUR)
    if until is None or start is None or start < until:
        gaps.append((start, until))
    return gaps


def window_figures(connection: Connection, since: float | None, until: float | None,
                   name: str | None) -> dict[str | None, Figures]:
    """:class:`Figures` per task name of the executions with ``since <= finished_at < until``
    (``name``: that task only), from the built days and hours inside the window and the rows
    of the rest. ``connection`` must read one snapshot (a transaction at REPEATABLE READ on
    PostgreSQL; any transaction on SQLite).

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the database did not answer.

    """
    by_name: dict[str | None, Figures] = {}
    days: list[int] = []
    hours: list[int] = []
    if supported(connection.dialect.name):
        first = None if since is None else _first_hour_from(since)
        last = None if until is None else _last_hour_from(until) - 1
        query = select(_BUILT.hours, _BUILT.hour).order_by(_BUILT.hour)
        if first is not None:
            query = query.where(_BUILT.hour >= first)
        if last is not None:
            query = query.where(_BUILT.hour + _BUILT.hours - 1 <= last)
        built = connection.execute(query).all()
        days = [hour for hours_, hour in built if hours_ == DAY_HOURS]
        in_days = {day + k for day in days for k in range(DAY_HOURS)}
        hours = [hour for hours_, hour in built if hours_ == 1 and hour not in in_days]
    periods = [(day, DAY_HOURS) for day in days] + [(hour, 1) for hour in hours]
    if periods:
        name_filter = [] if name is None else [_PERIOD.name == name]
        chosen = or_(*([and_(_PERIOD.hours == DAY_HOURS, _PERIOD.hour.in_(days))]
                       if days else []),
                     *(and_(_PERIOD.hours == 1, _PERIOD.hour.between(a, b))
                       for a, b in _runs(hours)))
        rows = connection.execute(select(
            _PERIOD.name, _PERIOD.count, _PERIOD.succeeded, _PERIOD.failed,
            _PERIOD.runtime_count, _PERIOD.runtime_sum, _PERIOD.runtime_min,
            _PERIOD.runtime_max, _PERIOD.histogram_offset, _PERIOD.histogram,
        ).where(chosen, *name_filter)).all()
        _add_periods(by_name, rows)
    gaps = _gaps(since, until, _runs(sorted(
        hour + k for hour, span in periods for k in range(span))))
    if gaps:
        ranges = [and_(*([] if a is None else [_C.finished_at >= a]),
                       *([] if b is None else [_C.finished_at < b])) for a, b in gaps]
        raw = (select(_C.name, _C.state, _C.runtime)
               .where(_C.finished_at.is_not(None), or_(*ranges),
                      *([] if name is None else [_C.name == name])))
        for row_name, state, runtime in connection.execute(raw).all():
            if row_name not in by_name:
                by_name[row_name] = Figures()
            by_name[row_name].add_row(state, runtime)
    return by_name
