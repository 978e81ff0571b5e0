"""The Running, Waiting, Scheduled, Completed, Statistics and Workers pages of a real ``serve``
(SQLite history, UI on) over a private Redis broker and a real prefork Celery worker, read over
HTTP: exact rows after known tasks, terminate a running task, cancel a waiting one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import Engine

from exporter.history import create_history_engine, get_execution
from tests.support.waiting import wait_for
from tests.ui.conftest import PASSWORDS, csrf_of, login
from ui.templating import seconds
from ui.users import add_user

pytestmark = pytest.mark.integration


def cells(page: str, table: int = 0) -> list[list[str]]:
    """The text of each body row's cells of the ``table``-th table of ``page``."""
    body = page.split("<tbody>")[table + 1].split("</tbody>")[0]
    return [[re.sub(r"<[^>]+>", "", cell).strip()
             for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)]


@pytest.fixture
def history_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'history.sqlite3'}"


@pytest.fixture
def engine(history_url) -> Iterator[Engine]:
    engine = create_history_engine(history_url)
    yield engine
    engine.dispose()


def test_the_pages_show_exactly_what_a_real_worker_does(
        redis_server, start_exporter, start_worker, producer, history_url, engine,  # noqa: F811
        tmp_path):
    redis_url = redis_server.url()  # a private server: no other test's worker answers inspect
    users = tmp_path / "users"
    add_user(str(users), "alice", "operator", PASSWORDS["alice"])
    worker = start_worker(redis_url, "a,b")
    exporter = start_exporter(redis_url, "--ui-users-file", str(users),
                              history_url=history_url)
    app = producer(redis_url)
    added = [app.send_task("examples.tasks.add", args=(i, 1), queue="a") for i in range(3)]
    sleeping = app.send_task("examples.tasks.sleep", args=(60,), queue="b")
    later = app.send_task("examples.tasks.add", args=(7, 7), queue="a", countdown=600)
    waiting = {priority: app.send_task("examples.tasks.add", args=(priority, 0),
                                       queue="nobody", priority=priority)
               for priority in (9, 0, 5)}

    def successes() -> list | None:
        found = [get_execution(engine, task.id) for task in added]
        return found if all(r is not None and r.state == "SUCCESS" for r in found) else None

    rows = wait_for(successes, message=lambda: f"3 successes in the history\n"
                                               f"{worker.output()[-2000:]}")
    wait_for(lambda: (r := get_execution(engine, sleeping.id)) is not None
             and r.state == "STARTED", message="the sleeping task started")

    with httpx.Client(base_url=exporter.url, follow_redirects=False, timeout=10) as client:
        login(client, "alice")  # type: ignore[arg-type]

        completed = client.get("/ui/completed").text
        expected = sorted(rows, key=lambda r: (r.state_ts, r.task_id), reverse=True)
        assert [(c[0], c[1], c[3], c[6]) for c in cells(completed)] == [
            (r.task_id, "examples.tasks.add", worker.hostname, seconds(r.runtime))
            for r in expected]

        stats = cells(client.get("/ui/statistics?window=1h").text)
        [add_row] = [row for row in stats if row[0] == "examples.tasks.add"]
        assert add_row[1:8] == ["3", "3", "0", "0", "0", "0", "1.000"]
        assert add_row[9:11] == [seconds(min(r.runtime for r in rows)),
                                seconds(max(r.runtime for r in rows))]

        def running_row() -> list[str] | None:
            found = [c for c in cells(client.get("/ui/running").text) if c[0] == sleeping.id]
            return found[0] if found and found[0][3] == "prefork" else None

        row = wait_for(running_row, message=lambda: "the sleeping task on the Running page\n"
                                                    + client.get("/ui/running").text)
        assert row[1:4] == ["examples.tasks.sleep", worker.hostname, "prefork"]
        assert row[6] == "events, workers" and row[7] == "Terminate…"

        def scheduled() -> list[list[str]] | None:
            page = client.get("/ui/scheduled").text
            return cells(page) if "<tbody>" in page else None

        [held] = wait_for(scheduled, message="the countdown task on the Scheduled page")
        assert held[2:6] == [later.id, "examples.tasks.add", worker.hostname, "0"]

        queue = client.get("/ui/waiting?queue=nobody").text
        assert [(c[0], c[1], c[3]) for c in cells(queue, 1)] == [
            ("1", waiting[0].id, "0"), ("2", waiting[5].id, "5 (step 3)"),
            ("3", waiting[9].id, "9")]

        workers = cells(client.get("/ui/workers").text)
        assert [c[:4] for c in workers] == [[worker.hostname, "busy", "prefork", "2"]]

        preview = client.get("/ui/running/terminate", params={"task_id": sleeping.id})
        assert preview.status_code == 200 and "Terminate the task" in preview.text
        done = client.post("/ui/running/terminate", data={
            "csrftoken": csrf_of(preview.text), "task_id": sleeping.id, "signal": "SIGKILL"})
        assert done.status_code == 202, done.text
        assert f'<dd id="signalled">{worker.hostname}</dd>' in done.text
        revoked = wait_for(lambda: (r := get_execution(engine, sleeping.id)) is not None
                           and r.state == "REVOKED" and r,
                           message="the terminated task REVOKED in the history")
        assert revoked.revoke_reason == "terminated"

        confirm = client.get("/ui/waiting/cancel", params={"task_id": waiting[9].id})
        assert "The live events have it as <strong>PENDING</strong>" in confirm.text
        cancelled = client.post("/ui/waiting/cancel", data={
            "csrftoken": csrf_of(confirm.text), "task_id": waiting[9].id})
        assert cancelled.status_code == 202, cancelled.text
        assert f'<dd id="acknowledged">{worker.hostname}</dd>' in cancelled.text


def test_a_task_two_workers_hold_for_its_eta_is_one_row_naming_both(
        redis_server, start_exporter, start_worker, producer, history_url, tmp_path):
    # Before: one row per worker holding it, while celery_task_scheduled counted it once.
    redis_url = redis_server.url()
    users = tmp_path / "users"
    add_user(str(users), "alice", "operator", PASSWORDS["alice"])
    first, second = (start_worker(redis_url, queue, app="tests.support.redelivery_app")
                     for queue in ("a", "b"))
    exporter = start_exporter(redis_url, "--ui-users-file", str(users), history_url=history_url)
    app = producer(redis_url)
    later = app.send_task("examples.tasks.add", args=(1, 1), queue="a", countdown=600)
    hostnames = sorted((first.hostname, second.hostname))

    with httpx.Client(base_url=exporter.url, follow_redirects=False, timeout=10) as client:
        login(client, "alice")  # type: ignore[arg-type]
        wait_for(lambda: later.id in client.get("/ui/scheduled").text, 30,
                 message="the first worker holds the task")
        # Only the second worker takes from queue a now: the redelivery goes to it, while
        # the first keeps holding the task (a cancelled consumer keeps what it took).
        for command, worker in (("add_consumer", second), ("cancel_consumer", first)):
            assert getattr(app.control, command)("a", destination=[worker.hostname],
                                                 reply=True, timeout=5), command

        def held_by_both() -> tuple[str, list[list[str]]] | None:
            page = client.get("/ui/scheduled").text
            rows = cells(page) if "<tbody>" in page else []
            return (page, rows) if rows and ", ".join(hostnames) in rows[0][4] else None

        page, rows = wait_for(held_by_both, 60, message=lambda: "the task held by both workers"
                              f"\n{client.get('/ui/scheduled').text}")
    assert len(rows) == 1 and rows[0][2:4] == [later.id, "examples.tasks.add"]
    assert re.sub(r"\s+", " ", rows[0][4]) == (
        f"{', '.join(hostnames)} held by 2 workers: each runs it at its ETA (delivered again "
        "while held: on Redis, after the broker's visibility_timeout)")
    assert page.count(f"<code>{later.id}</code>") == 1
    wait_for(lambda: exporter.metrics().value("celery_task_scheduled", name="examples.tasks.add",
                                              queue_name="a") == 1, 30,
             message="celery_task_scheduled counts it once")
