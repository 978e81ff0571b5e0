"""The task page draws the workflow the task belongs to as a nested list (issue 18), over HTTP
with the real app and a real SQLite history.
"""

from __future__ import annotations

import re

from tests.ui.conftest import T0, add_row, login


def _chain(engine) -> None:
    """r → c1 → c3 and r → c2 (siblings), plus a stranger of another root."""
    add_row(engine, "r", state="SUCCESS", ts=T0 + 1, name="app.first", root_id="r",
            sent_at=T0, runtime=0.5, started_at=T0 + 0.5)
    add_row(engine, "c1", state="SUCCESS", ts=T0 + 2, name="app.second", root_id="r",
            parent_id="r", sent_at=T0 + 1)
    add_row(engine, "c2", state="FAILURE", ts=T0 + 3, name="app.<b>third</b>", root_id="r",
            parent_id="r", sent_at=T0 + 1.5)
    add_row(engine, "c3", state="PENDING", ts=T0 + 4, name="app.total", root_id="r",
            parent_id="c1", sent_at=T0 + 4)
    add_row(engine, "other", state="SUCCESS", ts=T0, name="app.add", root_id="other")


def test_the_task_page_nests_its_workflow_with_links_and_states(client, engine):
    _chain(engine)
    login(client, "alice")
    page = client.get("/ui/tasks/c1")
    assert page.status_code == 200, page.text
    section = page.text[page.text.index('<h2 id="workflow">'):page.text.index('id="fields"')]
    assert "4 tasks share the root" in section
    tree = section[section.index("<nav"):section.index("</nav>")]
    tokens = [ul or task_id for ul, task_id in re.findall(
        r'(<ul class="workflow">|</ul>)|/ui/tasks/([^"]+)"><code>', tree)]
    ul = '<ul class="workflow">'  # nested lists the header's nav style does not flatten
    assert tokens == [ul, "r", ul, "c1", ul, "c3", "</ul>", "c2", "</ul>", "</ul>"]
    assert '<li aria-current="true">' in section and "(this task)" in section
    assert '<span class="state-FAILURE">FAILURE</span>' in section
    assert '<span class="state-PENDING">PENDING</span>' in section
    assert "app.&lt;b&gt;third&lt;/b&gt;" in section and "<b>third" not in section
    assert "other" not in section


def test_a_task_alone_says_it_is_in_no_workflow(client, engine):
    _chain(engine)
    login(client, "alice")
    page = client.get("/ui/tasks/other")
    assert page.status_code == 200
    assert "Not part of a workflow the events show" in page.text
