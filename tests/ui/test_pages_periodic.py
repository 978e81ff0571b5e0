"""The Periodic page over HTTP (TestClient against the real app): the real periodic tracker
(an ``--expect`` source over the SQLite history the page's rows come from), viewer access, the
``entry`` filter, and what it says without a tracker.
"""

from __future__ import annotations

import re

from celery import Celery

from exporter.periodic.schedules import expected_entry
from exporter.periodic.sources import ExpectSource
from exporter.periodic.tracker import PeriodicTracker
from tests.ui.conftest import T0, add_row, login
from ui.pages.periodic import HOW_TO_ENABLE


def cells(page: str) -> list[list[str]]:
    """The text of each body row's cells."""
    body = page.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return [[re.sub(r"<[^>]+>", "", cell).strip()
             for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)]


def tracker(engine, clock):
    app = Celery("periodic-page-test", set_as_current=False)
    source = ExpectSource([expected_entry("app.nightly", 60, app),
                           expected_entry("app.never", 60, app)])
    return PeriodicTracker([source], engine, interval=60, grace=10, clock=clock)


def test_periodic_lists_each_entry_with_its_last_runs_and_missed_count(make_client, engine):
    # app.nightly: a run that succeeded, then one that failed; app.never: no run at all.
    add_row(engine, "n1", state="SUCCESS", ts=T0 + 2, name="app.nightly", sent_at=T0,
            started_at=T0 + 1)
    add_row(engine, "n2", state="FAILURE", ts=T0 + 62, name="app.nightly", sent_at=T0 + 60,
            started_at=T0 + 61)
    now = [T0 + 100]
    periodic = tracker(engine, lambda: now[0])
    periodic.check()  # first sighting: due times are judged from here
    now[0] = T0 + 300
    periodic.check()  # due at T0+160, +220, +280 (each past its 10 s grace), none sent
    client = make_client(clock=lambda: T0 + 300, periodic_latest=periodic.latest)
    login(client, "bob")  # a viewer reads it

    page = client.get("/ui/periodic")

    assert page.status_code == 200, page.text
    assert cells(page.text) == [
        ["app.nightly (expect)", "app.nightly", "every 1 min 0 s",
         "2023-11-14 22:15:20.000 UTC (due 3 min 0 s ago)", "2023-11-14 22:14:20.000 UTC",
         "2023-11-14 22:14:21.000 UTC", "2023-11-14 22:13:22.000 UTC", "FAILURE", "3"],
        ["app.never (expect)", "app.never", "every 1 min 0 s",
         "2023-11-14 22:16:00.000 UTC (due 2 min 20 s ago)", "—", "—", "—", "—", "3"],
    ]
    assert 'href="/ui/failed?name=app.nightly"' in page.text
    assert re.search(r'<a href="/ui/periodic"[^>]*>Periodic</a>', page.text)  # in the nav


def test_periodic_entry_filter_shows_one_entry_and_says_when_there_is_none(make_client, engine):
    periodic = tracker(engine, lambda: T0)
    periodic.check()
    client = make_client(periodic_latest=periodic.latest)
    login(client, "bob")

    one = client.get("/ui/periodic", params={"entry": "app.never"})
    none = client.get("/ui/periodic", params={"entry": "<b>app.gone</b>"})
    bad = client.get("/ui/periodic", params={"entry": "a\x00b"})

    assert [row[0] for row in cells(one.text)] == ["app.never (expect)"]
    assert "No periodic entry named &lt;b&gt;app.gone&lt;/b&gt;." in none.text
    assert bad.status_code == 400 and "entry" in bad.text


def test_periodic_says_how_to_turn_it_on_without_a_tracker(make_client):
    client = make_client()
    login(client, "bob")
    page = client.get("/ui/periodic")
    assert page.status_code == 200
    assert HOW_TO_ENABLE in page.text


def test_periodic_before_the_first_check_and_without_a_session(make_client, engine):
    client = make_client(periodic_latest=tracker(engine, lambda: T0).latest)
    assert client.get("/ui/periodic").headers["location"] == "/ui/login?next=%2Fui%2Fperiodic"
    login(client, "alice")
    assert "has not finished its first check yet" in client.get("/ui/periodic").text
