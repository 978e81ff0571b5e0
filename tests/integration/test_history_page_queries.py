"""The job browser's faster query shapes give what the plain computation gives, on real SQLite
and PostgreSQL: a random history (names with and without a value, every terminal and
unfinished state, failures sharing a finish time) is read through the queries and compared
with the same figures computed in Python from the rows themselves.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, insert

from exporter.history import STATES, create_history_engine, failure_groups, upgrade
from exporter.history.orm import TASK_EXECUTION
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
