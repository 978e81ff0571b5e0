"""The Statistics page and the API say when a 95th percentile comes from the hourly histograms
(exporter/history/rollup.py), and by how much it may be off; an exact one carries no mark."""

from __future__ import annotations

import re

from exporter.history.rollup import build
from tests.ui.conftest import T0, add_row, login

#: The page's clock: T0 + 100 (T0 is 22:13:20 UTC), so the last day holds 23 whole hours.
NOW = T0 + 100


def p95_cells(page: str) -> list[str]:
    """The text of the p95 column, row by row (the 12th cell of each row)."""
    body = page.split("<tbody>")[1]
    rows = re.findall(r"<tr>(.*?)</tr>", body, re.S)
    return [re.sub(r"<[^>]+>", "", re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)[11]).strip()
            for row in rows]


def test_a_p95_from_the_hourly_histograms_is_marked_with_its_bound(make_client, engine):
    for i in range(40):  # 40 run times 1..40 s in a whole hour, 2-3 hours before NOW
        add_row(engine, f"s{i}", state="SUCCESS", ts=T0 - 7000 + i, name="app.hist",
                runtime=float(i + 1))
    client = make_client(clock=lambda: NOW)
    login(client, "bob")
    exact = client.get("/ui/statistics?window=1d").text
    assert p95_cells(exact) == ["38.0 s"]  # nothing built yet: the rows, exact
    assert "p95-note" not in exact
    build(engine, now=NOW, budget=60.0)
    page = client.get("/ui/statistics?window=1d").text
    assert p95_cells(page) == ["≈ 36.4 s"]  # the geometric middle of 38 s's bucket [34.9, 38.05)
    assert "within ±4.4 % of the figure shown" in page
    assert "Counts, ratios, average, min and max are exact." in page
    hour = client.get("/ui/statistics?window=1h").text
    assert "No execution finished in this window" in hour


def test_the_api_says_the_p95_bound(make_client, engine):
    from exporter.history import task_stats

    for i in range(40):
        add_row(engine, f"s{i}", state="SUCCESS", ts=T0 - 7000 + i, name="app.hist",
                runtime=float(i + 1))
    build(engine, now=NOW, budget=60.0)
    [stats] = task_stats(engine, since=NOW - 86400, until=NOW)
    assert (stats.count, stats.min_runtime, stats.max_runtime, stats.avg_runtime) == (
        40, 1.0, 40.0, 20.5)
    assert round(stats.p95_relative_error, 4) == 0.0443
    assert 38.0 / 1.0443 <= stats.p95_runtime <= 38.0 * 1.0443
