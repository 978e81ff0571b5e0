"""The job browser's faster query shapes give what the plain computation gives, on real SQLite
and PostgreSQL: a random history (names with and without a value, every terminal and
unfinished state, failures sharing a finish time) is read through the queries and compared
with the same figures computed in Python from the rows themselves — statistics also with
their hourly and daily figures built, and after writes and prunes that follow the build.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, delete, func, insert, select, text

from exporter.history import (
    STATES,
    HistoryWriter,
    TaskStats,
    create_history_engine,
    failure_groups,
    prune,
    task_stats,
    upgrade,
)
from exporter.history.orm import TASK_EXECUTION, TASK_STATS_BUILT, TASK_STATS_PERIOD
from exporter.history.rollup import (
    DAY_HOURS,
    HOUR,
    P95_RELATIVE_ERROR,
    build,
    ensure_triggers,
)
from tests.support.events import PRODUCER, task_event
from tests.support.waiting import wait_for
from ui.queries import state_counts

T0 = 1_700_000_000.0
NAMES = ["app.a", "app.b", "app.c", None]
EXCEPTIONS = ["ValueError", "KeyError", None]


def random_rows(count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` rows over 3 days before ``T0``; a few failures share a finish time."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        state = rng.choice(["SUCCESS"] * 6 + ["FAILURE"] * 3 + list(STATES))
        ts = T0 - rng.uniform(0, 3 * 86400)
        if state == "FAILURE" and i % 10 == 0:
            ts = T0 - 3600.0 * (i % 7)  # shared finish times: the sample is the greatest id
        finished = state in ("SUCCESS", "FAILURE", "REVOKED", "REJECTED", "LOST")
        runtime = rng.expovariate(2.0) if state in ("SUCCESS", "FAILURE") else None
        rows.append({
            "task_id": f"t{rng.getrandbits(40):011x}", "name": rng.choice(NAMES), "state": state,
            "state_ts": ts, "finished_at": ts if finished else None, "runtime": runtime,
            "exception_type": rng.choice(EXCEPTIONS) if state == "FAILURE" else None,
            "exception_message": f"failed {i}" if state == "FAILURE" else None,
            "updated_at": ts})
    return rows


@pytest.fixture
def filled(history_url: str) -> Iterator[tuple[Engine, list[dict[str, Any]]]]:
    """A history holding :func:`random_rows` (4,000), and those rows."""
    engine = create_history_engine(history_url)
    upgrade(engine)
    rows = random_rows(4000, seed=7)
    with engine.begin() as connection:
        # The session's PostgreSQL database may hold periods another test built (inserts by
        # hand, unlike the writer's, do not forget them).
        connection.execute(delete(TASK_STATS_BUILT))
        connection.execute(delete(TASK_STATS_PERIOD))
        connection.execute(insert(TASK_EXECUTION), rows)
    yield engine, rows
    engine.dispose()


@pytest.mark.parametrize("window", [600.0, 3600.0, 86400.0, 4 * 86400.0])
def test_state_counts_equal_a_count_of_the_rows(filled, window):
    engine, rows = filled
    expected = Counter(r["state"] for r in rows if r["state_ts"] >= T0 - window)
    assert state_counts(engine, T0 - window) == dict(expected)


@pytest.mark.parametrize("name", [None, "app.a"])
@pytest.mark.parametrize("window", [3600.0, 86400.0, 4 * 86400.0])
def test_failure_groups_equal_a_grouping_of_the_rows(filled, window, name):
    engine, rows = filled
    failed = [r for r in rows if r["state"] == "FAILURE" and r["finished_at"] >= T0 - window
              and (name is None or r["name"] == name)]
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in failed:
        groups.setdefault(row["exception_type"] or "unknown", []).append(row)
    expected = []
    for exception, members in groups.items():
        newest = max(members, key=lambda r: (r["finished_at"], r["task_id"]))
        expected.append((exception, len(members), newest["finished_at"],
                         newest["exception_message"], newest["task_id"], newest["name"]))
    expected.sort(key=lambda g: (-g[1], -g[2]))
    got = failure_groups(engine, since=T0 - window, name=name, limit=20)
    assert [(g.exception_type, g.count, g.last_seen, g.sample_message, g.sample_task_id,
             g.sample_name) for g in got] == expected
    assert failure_groups(engine, since=T0 - window, name=name, limit=1) == got[:1]


def expected_stats(rows: list[dict[str, Any]], since: float, until: float,
                   name: str | None = None) -> dict[str | None, tuple[Any, ...]]:
    """Per name: (count, succeeded, failed, revoked, rejected, lost, min, max, exact mean,
    nearest-rank p95), from the rows themselves.
    """
    by_name: dict[str | None, list[dict[str, Any]]] = {}
    for row in rows:
        if row["finished_at"] is not None and since <= row["finished_at"] < until and (
                name is None or row["name"] == name):
            by_name.setdefault(row["name"], []).append(row)
    result = {}
    for task_name, members in by_name.items():
        runtimes = sorted(r["runtime"] for r in members if r["runtime"] is not None)
        n = len(runtimes)
        result[task_name] = (
            len(members), sum(r["state"] == "SUCCESS" for r in members),
            sum(r["state"] == "FAILURE" for r in members),
            sum(r["state"] == "REVOKED" for r in members),
            sum(r["state"] == "REJECTED" for r in members),
            sum(r["state"] == "LOST" for r in members),
            runtimes[0] if n else None, runtimes[-1] if n else None,
            math.fsum(runtimes) / n if n else None,
            runtimes[math.ceil(0.95 * n) - 1] if n else None)
    return result


def assert_stats_match(got: list[TaskStats], expected: dict[str | None, tuple[Any, ...]],
                       approximate: bool) -> None:
    """Counts, min and max equal; the mean to 1e-12 (sums added in another order); the p95
    equal when said exact, else within the stated bound — and said approximate only where
    ``approximate`` allows it.
    """
    assert {s.name for s in got} == set(expected)
    for stats in got:
        count, succeeded, failed, revoked, rejected, lost, low, high, mean, p95 = \
            expected[stats.name]
        assert (stats.count, stats.succeeded, stats.failed, stats.revoked, stats.rejected,
                stats.lost, stats.min_runtime, stats.max_runtime) == (
            count, succeeded, failed, revoked, rejected, lost, low, high), stats.name
        # Every finished row here is in one of the five terminal states: nothing unshown.
        assert succeeded + failed + revoked + rejected + lost == count, stats.name
        assert stats.success_ratio == succeeded / count
        assert stats.failure_ratio == failed / count
        assert stats.avg_runtime == pytest.approx(mean, rel=1e-12, abs=0)
        if stats.p95_relative_error == 0:
            assert stats.p95_runtime == p95, stats.name
        else:
            assert approximate, stats.name
            assert stats.p95_relative_error == P95_RELATIVE_ERROR
            assert p95 / (1 + P95_RELATIVE_ERROR) <= stats.p95_runtime <= p95 * (
                1 + P95_RELATIVE_ERROR), (stats.name, stats.p95_runtime, p95)


WINDOWS = [(T0 - 3600.0, T0), (T0 - 86400.0, T0), (T0 - 2.5 * 86400, T0 - 1234.5),
           (T0 - 3 * 86400 - 1, T0 + 1), (T0 - 7200.0, T0 - 3600.0)]


def built_periods(engine: Engine) -> set[tuple[int, int]]:
    """(hours, hour) of every built period."""
    with engine.connect() as connection:
        return {(hours, hour) for hours, hour in connection.execute(
            select(TASK_STATS_BUILT.c.hours, TASK_STATS_BUILT.c.hour))}


@pytest.mark.parametrize("name", [None, "app.b"])
def test_task_stats_equal_the_rows_before_and_after_the_periods_are_built(filled, name):
    engine, rows = filled
    for since, until in WINDOWS:
        assert_stats_match(task_stats(engine, since=since, until=until, name=name),
                           expected_stats(rows, since, until, name), approximate=False)
    assert build(engine, now=T0, budget=60.0) is False
    periods = built_periods(engine)
    # 3 days of closed hours, and the 2 whole UTC days among them (T0 is 22:13 UTC).
    assert len({hour for hours, hour in periods if hours == 1}) == 72
    assert len({hour for hours, hour in periods if hours == DAY_HOURS}) == 2
    for since, until in WINDOWS:
        got = task_stats(engine, since=since, until=until, name=name)
        assert_stats_match(got, expected_stats(rows, since, until, name), approximate=True)
    week = task_stats(engine, since=T0 - 3 * 86400 - 1, until=T0 + 1, name=name)
    assert any(s.p95_relative_error for s in week)  # the check above saw approximations


def stored_rows(engine: Engine) -> list[dict[str, Any]]:
    """Every row's name, state, finished_at and runtime as the database holds them now."""
    table = TASK_EXECUTION
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(select(
            table.c.task_id, table.c.name, table.c.state, table.c.finished_at,
            table.c.runtime))]


def test_the_writers_changes_after_a_build_are_counted_exactly(filled):
    """The history writer's batch forgets the built hours and days of what it changes (a late
    execution finishing in a built hour, a REVOKED execution that then succeeded in another
    hour, a STARTED one ending): the statistics equal the rows at once, and again after the
    next build.
    """
    engine, rows = filled
    build(engine, now=T0, budget=60.0)
    before = built_periods(engine)
    revoked = next(r for r in rows if r["state"] == "REVOKED"
                   and r["finished_at"] < T0 - 2 * 86400)
    started = next(r for r in rows if r["state"] == "STARTED" and r["state_ts"] < T0 - 86400)
    late, moved, ended = T0 - 86400 + 5.0, T0 - 30 * 3600 + 1.0, T0 - 3600 * 5 - 0.5
    events = [
        task_event("task-sent", uuid="late", timestamp=late - 1, hostname=PRODUCER,
                   name="app.late", queue="q"),
        task_event("task-started", uuid="late", timestamp=late - 0.5),
        task_event("task-succeeded", uuid="late", timestamp=late, runtime=0.25, result="1"),
        task_event("task-succeeded", uuid=revoked["task_id"], timestamp=moved, runtime=7.5,
                   result="2"),
        task_event("task-succeeded", uuid=started["task_id"], timestamp=ended, runtime=0.125,
                   result="3"),
    ]
    writer = HistoryWriter(engine, max_delay=0.05, clock=lambda: T0)
    writer.start()
    try:
        for event in events:
            writer.submit(event)
        assert writer.flush(10.0), writer.stats()
    finally:
        writer.stop(5.0)
    now_rows = stored_rows(engine)
    changed = {r["task_id"]: r for r in now_rows
               if r["task_id"] in ("late", revoked["task_id"], started["task_id"])}
    assert (changed["late"]["state"], changed["late"]["finished_at"]) == ("SUCCESS", late)
    assert (changed[started["task_id"]]["state"],
            changed[started["task_id"]]["finished_at"]) == ("SUCCESS", ended)
    forgotten = {hour for hours, hour in before - built_periods(engine) if hours == 1}
    times = {late, ended, revoked["finished_at"], changed[revoked["task_id"]]["finished_at"]}
    assert forgotten >= {math.floor(t / HOUR) for t in times}
    for since, until in WINDOWS:
        assert_stats_match(task_stats(engine, since=since, until=until),
                           expected_stats(now_rows, since, until), approximate=True)
    assert build(engine, now=T0, budget=60.0) is False
    assert built_periods(engine) == before
    for since, until in WINDOWS:
        assert_stats_match(task_stats(engine, since=since, until=until),
                           expected_stats(now_rows, since, until), approximate=True)


def test_deletes_after_a_build_are_counted_exactly(filled):
    """A DELETE of finished rows from anywhere (a prune in another process, by hand) forgets
    their periods through the trigger, in its own transaction.
    """
    engine, rows = filled
    build(engine, now=T0, budget=60.0)
    gone = [r for r in rows if r["finished_at"] is not None][:5]
    with engine.begin() as connection:
        connection.execute(delete(TASK_EXECUTION).where(
            TASK_EXECUTION.c.task_id.in_([r["task_id"] for r in gone])))
    kept = [r for r in rows if r not in gone]
    for since, until in WINDOWS:
        assert_stats_match(task_stats(engine, since=since, until=until),
                           expected_stats(kept, since, until), approximate=True)


def test_a_prune_after_a_build_keeps_the_statistics_exact(filled):
    engine, rows = filled
    build(engine, now=T0, budget=60.0)
    cutoff = T0 - 1.5 * 86400 + 17.0  # inside a built hour and a built day
    prune(engine, older_than_seconds=T0 - cutoff, now=T0)
    kept = [r for r in rows if (r["finished_at"] if r["finished_at"] is not None
                                else r["updated_at"]) >= cutoff]
    for since, until in WINDOWS:
        assert_stats_match(task_stats(engine, since=since, until=until),
                           expected_stats(kept, since, until), approximate=True)
    build(engine, now=T0, budget=60.0)
    for since, until in WINDOWS:
        assert_stats_match(task_stats(engine, since=since, until=until),
                           expected_stats(kept, since, until), approximate=True)


def test_a_missing_trigger_is_recreated_and_every_period_forgotten(filled):
    engine, rows = filled
    build(engine, now=T0, budget=60.0)
    assert ensure_triggers(engine) is False
    with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            connection.execute(text("DROP TRIGGER task_stats_stale_delete"))
        else:
            connection.execute(text("DROP TRIGGER task_stats_stale ON task_execution"))
        # A delete nobody sees: the built figures are wrong from here on.
        connection.execute(delete(TASK_EXECUTION).where(
            TASK_EXECUTION.c.runtime.is_not(None), TASK_EXECUTION.c.runtime < 0.5))
    assert ensure_triggers(engine) is True
    assert built_periods(engine) == set()
    with engine.connect() as connection:
        finished = connection.execute(select(func.count()).where(
            TASK_EXECUTION.c.finished_at.is_not(None))).scalar_one()
    got = task_stats(engine, since=T0 - 4 * 86400, until=T0 + 1)
    assert sum(s.count for s in got) == finished
    assert min(s.min_runtime for s in got if s.min_runtime is not None) >= 0.5


def test_the_history_writer_builds_the_periods_by_itself(filled):
    """A running writer builds the closed hours and days of its database (the first round
    2 s after it starts; a backfill goes on every 2 s, 50 ms of work a round).
    """
    engine, rows = filled
    writer = HistoryWriter(engine, max_delay=0.05, clock=lambda: T0)
    writer.start()
    try:
        # 150 s: a round builds what 50 ms allow, so a loaded machine needs more rounds.
        wait_for(lambda: len(built_periods(engine)) == 72 + 2, 150, interval=0.2)
    finally:
        writer.stop(5.0)
    for since, until in WINDOWS:
        assert_stats_match(task_stats(engine, since=since, until=until),
                           expected_stats(rows, since, until), approximate=True)
