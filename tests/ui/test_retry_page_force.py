"""A retry confirmed from a page opened before the task was retried elsewhere sends nothing:
the answer is the 409 page naming the retry, and the new confirmation shows the retry and asks
to tick "send it again". The real app over a real Redis broker and a SQLite history.
"""

from __future__ import annotations

import re

from sqlalchemy import update

from exporter.history import get_execution
from exporter.history.orm import TASK_EXECUTION
from tests.ui.conftest import T0, add_row, csrf_of, login
from tests.ui.test_ui_http import once_of


def test_a_stale_retry_page_does_not_send_a_retried_task_again(make_client, engine):
    add_row(engine, "t1")
    stale, other = make_client(), make_client()
    login(stale, "alice")
    login(other, "alice")
    opened = stale.get("/ui/tasks/t1/retry").text
    assert 'name="force"' not in opened

    elsewhere = other.get("/ui/tasks/t1/retry").text
    done = other.post("/ui/tasks/t1/retry", data={"csrftoken": csrf_of(elsewhere),
                                                  "once": once_of(elsewhere)})
    assert done.status_code == 202, done.text
    new_id = re.search(r'id="new-task" href="[^"]+"><code>([^<]+)</code>', done.text).group(1)

    late = stale.post("/ui/tasks/t1/retry", data={"csrftoken": csrf_of(opened),
                                                  "once": once_of(opened)})
    assert late.status_code == 409, late.text
    assert f"this task was already retried: its retry {new_id} is PENDING." in late.text
    assert get_execution(engine, "t1").manual_retry_count == 1

    again = stale.get("/ui/tasks/t1/retry").text
    assert f"already retried: its retry {new_id} is PENDING" in again
    assert f"<code>{new_id}</code></a> PENDING" in again
    assert '<input type="checkbox" id="force" name="force" value="true" required>' in again
    forced = stale.post("/ui/tasks/t1/retry", data={"csrftoken": csrf_of(again),
                                                    "once": once_of(again), "force": "true"})
    assert forced.status_code == 202, forced.text
    assert get_execution(engine, "t1").manual_retry_count == 2


def test_bulk_retry_page_skips_retried_tasks_unless_included(client, engine):
    add_row(engine, "o1")
    login(client, "alice")
    preview = client.get("/ui/tasks/o1/retry").text
    done = client.post("/ui/tasks/o1/retry", data={"csrftoken": csrf_of(preview),
                                                   "once": once_of(preview)})
    new_id = re.search(r'id="new-task" href="[^"]+"><code>([^<]+)</code>', done.text).group(1)
    with engine.begin() as connection:
        connection.execute(update(TASK_EXECUTION).where(TASK_EXECUTION.c.task_id == new_id)
                           .values(state="SUCCESS", state_ts=T0 + 5, finished_at=T0 + 5))

    skipped = client.get("/ui/failed/retry?exception=ValueError").text
    assert f"already retried: its retry {new_id} SUCCEEDED (include_retried: true sends it)" \
        in skipped
    assert "Retry them now" not in skipped
    assert ('<a href="/ui/failed/retry?exception=ValueError&amp;include_retried=true">Preview '
            'with them included</a>') in skipped

    included = client.get("/ui/failed/retry?exception=ValueError&include_retried=true").text
    assert '<input type="hidden" name="include_retried" value="true">' in included
    sent = client.post("/ui/failed/retry", data={
        "csrftoken": csrf_of(included), "once": once_of(included), "exception": "ValueError",
        "include_retried": "true"})
    assert sent.status_code == 200, sent.text
    assert "1 sent as new tasks, 0 skipped, of 1 selected" in sent.text
    assert get_execution(engine, "o1").manual_retry_count == 2
