"""The task page's workflow tree lists a step's manual retries with their states: a chord
callback fixed by a retry shows that retry SUCCESS. The real app over a real Redis broker.
"""

from __future__ import annotations

import re

from sqlalchemy import update

from exporter.history.orm import TASK_EXECUTION
from tests.ui.conftest import T0, add_row, csrf_of, login
from tests.ui.test_ui_http import once_of


def test_a_retried_callback_shows_its_retry_in_the_workflow(client, engine):
    add_row(engine, "h", state="SUCCESS", root_id="h", sent_at=T0 - 2)
    add_row(engine, "cb", root_id="h", parent_id="h", sent_at=T0 - 1, name="app.total")
    login(client, "alice")
    preview = client.get("/ui/tasks/cb/retry").text
    done = client.post("/ui/tasks/cb/retry", data={"csrftoken": csrf_of(preview),
                                                   "once": once_of(preview)})
    assert done.status_code == 202, done.text
    new_id = re.search(r'id="new-task" href="[^"]+"><code>([^<]+)</code>', done.text).group(1)
    with engine.begin() as connection:
        connection.execute(update(TASK_EXECUTION).where(TASK_EXECUTION.c.task_id == new_id)
                           .values(state="SUCCESS", state_ts=T0 + 5, finished_at=T0 + 5))

    page = client.get("/ui/tasks/h").text
    assert (f'retried as <a href="/ui/tasks/{new_id}"><code>{new_id}</code></a> — '
            '<span class="state-SUCCESS">SUCCESS</span>') in page
