"""Small job-browser fixes found by a newcomer: the right status for an unknown task's retry
and for a bad bulk-retry parameter, and durations on the Periodic page. Real SQLite history,
real Redis broker (database 15), the real app through Starlette's TestClient.
"""

from __future__ import annotations

import re

import pytest
from celery import Celery

from exporter.history import get_execution
from exporter.periodic.schedules import expected_entry
from exporter.periodic.sources import ExpectSource
from exporter.periodic.tracker import PeriodicTracker
from tests.ui.conftest import T0, add_row, csrf_of, login
from ui.templating import schedule


def test_a_retry_post_for_an_unknown_task_is_a_404_not_already_sent(client, engine):
    add_row(engine, "t1")
    login(client, "alice")
    csrf = csrf_of(client.get("/ui/tasks/t1").text)
    response = client.post("/ui/tasks/nosuch/retry", data={"csrftoken": csrf, "once": "bad"})
    assert response.status_code == 404, response.text
    assert "Already sent" not in response.text
    assert "no task &#39;nosuch&#39; in the history" in response.text


def test_the_statistics_page_shows_revoked_rejected_and_lost(client, engine):
    for i in range(9):
        add_row(engine, f"s{i}", "SUCCESS", ts=T0 + i, runtime=1.0)
    add_row(engine, "r1", "REVOKED", ts=T0 + 20)
    add_row(engine, "r2", "REVOKED", ts=T0 + 21)
    add_row(engine, "l1", "LOST", ts=T0 + 23, finished_at=T0 + 23)
    login(client, "bob")
    page = client.get("/ui/statistics?window=1h").text
    headings = re.findall(r'<th scope="col"[^>]*>\s*(?:<a [^>]*>)?([A-Za-z0-9 ]+)', page)
    assert [h.strip() for h in headings] == [
        "Task", "Count", "Succeeded", "Failed", "Revoked", "Rejected", "Lost", "Success ratio",
        "Avg", "Min", "Max", "p95", "Slow"]
    (row,) = re.findall(r"<tr><td>.*?</tr>", page, re.S)
    cells = re.findall(r'<td class="num">(?:<a [^>]*>)?([^<]*)', row)
    assert cells[:7] == ["12", "9", "0", "2", "0", "1", "0.750"]


@pytest.mark.parametrize(("query", "error"), [
    ("limit=abc", "limit: Input should be a valid integer"),
    ("limit=0", "limit: Input should be greater than or equal to 1"),
    ("limit=101", "limit: Input should be less than or equal to 100"),
])
def test_a_bad_bulk_retry_limit_is_a_400_page_naming_it(client, engine, query, error):
    add_row(engine, "t1")
    login(client, "alice")
    response = client.get(f"/ui/failed/retry?{query}")
    assert response.status_code == 400, response.text
    assert "400 — Invalid parameter" in response.text and error in response.text


def test_a_bulk_retry_limit_holds_from_the_preview_to_the_confirmation(client, engine):
    for i in range(3):
        add_row(engine, f"t{i}", ts=T0 + i)
    login(client, "alice")
    preview = client.get("/ui/failed/retry?limit=2")
    assert preview.status_code == 200, preview.text
    assert '<input type="hidden" name="limit" value="2">' in preview.text
    once = re.search(r'name="once" value="([^"]+)"', preview.text).group(1)
    sent = client.post("/ui/failed/retry", data={"csrftoken": csrf_of(preview.text),
                                                 "once": once, "limit": "2"})
    assert sent.status_code == 200, sent.text
    assert "2 sent as new tasks, 0 skipped, of 2 selected" in sent.text
    assert [get_execution(engine, f"t{i}").manual_retry_count for i in range(3)] == [0, 1, 1]


def test_the_periodic_page_writes_intervals_as_durations(make_client, engine):
    app = Celery("periodic-durations", set_as_current=False)
    source = ExpectSource([expected_entry("app.daily", 86400, app),
                           expected_entry("app.often", 2.5, app)])
    periodic = PeriodicTracker([source], engine, interval=60, grace=10, clock=lambda: T0)
    periodic.check()
    client = make_client(clock=lambda: T0, periodic_latest=periodic.latest)
    login(client, "bob")
    page = client.get("/ui/periodic").text
    assert '<td title="every 86400s">every 24 h 0 min</td>' in page
    assert '<td title="every 2.5s">every 2.500 s</td>' in page
    assert schedule("crontab 0 2 * * *") == "crontab 0 2 * * *"
    assert schedule("every 3600s") == "every 1 h 0 min"
    assert schedule("every 1e+06s") == "every 277 h 46 min"
