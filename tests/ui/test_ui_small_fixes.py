"""Small job-browser fixes found by a newcomer: the right status for an unknown task's retry
and for a bad bulk-retry parameter, and durations on the Periodic page. Real SQLite history,
real Redis broker (database 15), the real app through Starlette's TestClient.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.ui.conftest import add_row, csrf_of, login


@pytest.fixture
def redis_url() -> Iterator[str]:
    """Redis database 15, emptied before and after (this file's own)."""
    client = redis.Redis("127.0.0.1", 6379, db=15)
    client.flushdb()
    yield "redis://127.0.0.1:6379/15"
    client.flushdb()


def test_a_retry_post_for_an_unknown_task_is_a_404_not_already_sent(client, engine):
    add_row(engine, "t1")
    login(client, "alice")
    csrf = csrf_of(client.get("/ui/tasks/t1").text)
    response = client.post("/ui/tasks/nosuch/retry", data={"csrftoken": csrf, "once": "bad"})
    assert response.status_code == 404, response.text
    assert "Already sent" not in response.text
    assert "no task &#39;nosuch&#39; in the history" in response.text
