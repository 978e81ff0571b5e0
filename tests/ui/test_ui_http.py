"""The job browser over HTTP with the real app: login, sessions, CSRF, roles, error pages and
escaping. A real SQLite history and a real Redis broker; no browser (see test_browser.py).
"""

from __future__ import annotations

from tests.ui.conftest import add_row, login


def test_the_overview_needs_a_login_and_shows_counts_by_state(client, engine):
    add_row(engine, "t-failed")
    add_row(engine, "t-ok", state="SUCCESS")
    response = client.get("/ui/")
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login?next=%2Fui%2F"
    login(client, "alice")
    page = client.get("/ui/")
    assert page.status_code == 200, page.text
    assert "alice (operator)" in page.text
    assert '<th scope="row" class="state-FAILURE">FAILURE</th>' in page.text
