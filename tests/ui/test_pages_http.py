"""The job browser's Running, Waiting, Scheduled, Completed, Statistics and Workers pages over
HTTP with the real app, a real SQLite history and a real Redis broker (no worker: the pages'
answers when nobody runs anything).
"""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from actions.wiring import action_context
from exporter.config import Settings
from exporter.history import TaskStats, record_action
from exporter.history.orm import ACTION_AUDIT
from exporter.http import create_http_app
from exporter.poll.snapshot import PollSnapshot, QueueState
from exporter.state.health import Health
from tests.ui.conftest import T0, add_row, csrf_of, login
from ui.access import UiContext
from ui.app import create_ui
from ui.pages.statistics import sort_stats
from ui.templating import when
from ui.users import load_users

PAGES = ["/ui/running", "/ui/running/terminate?task_id=t1", "/ui/waiting",
         "/ui/waiting?queue=a", "/ui/waiting/cancel?task_id=t1", "/ui/scheduled",
         "/ui/completed", "/ui/completed?name=x", "/ui/statistics", "/ui/workers"]
POSTS = ["/ui/running/terminate", "/ui/waiting/cancel"]


def succeeded(engine, task_id: str, ts: float, runtime: float, name: str = "app.add",
              queue: str = "a") -> None:
    add_row(engine, task_id, state="SUCCESS", ts=ts, name=name, queue=queue,
            runtime=runtime, started_at=ts - runtime, hostname="celery@w1", result="3")


def rows_of(page: str) -> list[str]:
    """The task ids the page's table links to, in order."""
    return re.findall(r'href="/ui/tasks/([^"/]+)"><code>', page)


@pytest.mark.parametrize("path", PAGES)
def test_every_page_without_a_session_redirects_to_the_login(client, path):
    response = client.get(path)
    assert response.status_code == 303, response.text
    assert response.headers["location"].startswith("/ui/login?next=%2Fui%2F")


@pytest.mark.parametrize("path", POSTS)
def test_terminate_and_cancel_without_a_csrf_token_are_refused(client, engine, path):
    add_row(engine, "t1", state="STARTED")
    login(client, "alice")
    for data in ({"task_id": "t1"}, {"task_id": "t1", "csrftoken": "forged"}):
        response = client.post(path, data=data)
        assert response.status_code == 403, response.text
        assert "form refused" in response.text
    with engine.connect() as connection:
        assert connection.execute(select(ACTION_AUDIT.c.id)).all() == []


def test_a_viewer_cannot_terminate_or_cancel(client, engine):
    add_row(engine, "t1", state="STARTED")
    login(client, "bob")
    page = client.get("/ui/running")
    assert page.status_code == 200 and "Terminate…" not in page.text
    token = csrf_of(page.text)
    for path in ("/ui/running/terminate", "/ui/waiting/cancel"):
        assert client.get(f"{path}?task_id=t1").status_code == 403
        response = client.post(path, data={"csrftoken": token, "task_id": "t1"})
        assert response.status_code == 403, response.text
        assert "Your role (viewer) cannot retry or cancel tasks" in response.text
    with engine.connect() as connection:
        assert connection.execute(select(ACTION_AUDIT.c.id)).all() == []


def test_completed_lists_the_succeeded_executions_newest_first_with_their_run_time(
        client, engine):
    succeeded(engine, "s1", T0 + 1, 0.25)
    succeeded(engine, "s2", T0 + 2, 1.5)
    succeeded(engine, "s3", T0 + 3, 42.0, name="app.other", queue="b")
    add_row(engine, "f1", ts=T0 + 4)  # a failure: not listed
    add_row(engine, "r1", state="STARTED", ts=T0 + 5)
    login(client, "bob")
    page = client.get("/ui/completed").text
    assert rows_of(page) == ["s3", "s2", "s1"]
    for runtime in ("42.0 s", "1.500 s", "0.250 s"):
        assert f'<td class="num">{runtime}</td>' in page
    assert rows_of(client.get("/ui/completed?name=app.add").text) == ["s2", "s1"]
    assert rows_of(client.get("/ui/completed?queue=b").text) == ["s3"]
    assert rows_of(client.get(
        "/ui/completed?since=2023-11-14T22:13:21.5&until=2023-11-14T22:13:23").text) == ["s2"]


def test_completed_pages_with_a_cursor_that_carries_the_filter(client, engine):
    for i in range(60):
        succeeded(engine, f"s{i:02d}", T0 + i, 0.1)
    login(client, "bob")
    first = client.get("/ui/completed?name=app.add").text
    assert rows_of(first) == [f"s{i:02d}" for i in range(59, 9, -1)]
    [link] = re.findall(r'rel="next" href="([^"]+)"', first)
    assert link.startswith("/ui/completed?name=app.add&amp;cursor=")
    second = client.get(link.replace("&amp;", "&")).text
    assert rows_of(second) == [f"s{i:02d}" for i in range(9, -1, -1)]
    assert 'rel="next"' not in second


@pytest.mark.parametrize(("path", "error"), [
    ("/ui/completed?exception=ValueError", "exception: completed executions raised nothing"),
    ("/ui/completed?cursor=garbage", "cursor: not a cursor of this list"),
    ("/ui/completed?since=yesterday", "since: an ISO 8601 time"),
    ("/ui/statistics?window=forever", "window:"),
    ("/ui/statistics?sort=evil", "sort: Input should be"),
    ("/ui/statistics?order=up", "order: Input should be"),
    ("/ui/statistics?name=a%0Ab", "name: 1 to 255 characters, no control characters"),
    ("/ui/waiting?offset=-1", "offset: Input should be greater than or equal to 0"),
    ("/ui/waiting?offset=x", "offset: Input should be a valid integer"),
    ("/ui/waiting?queue=a%00b", "queue: 1 to 255 characters, no control characters"),
    ("/ui/running/terminate?task_id=a%0Ab", "task_id: 1 to 255 characters"),
    ("/ui/running/terminate", "task_id: Field required"),
])
def test_bad_parameters_give_a_readable_400_page(client, path, error):
    login(client, "alice")
    response = client.get(path)
    assert response.status_code == 400, response.text
    assert "400 — Invalid parameter" in response.text and error in response.text


def test_statistics_per_name_with_the_slow_flag_sorted_by_the_url(make_client, engine):
    client = make_client(clock=lambda: T0 + 100)  # the default --slow-threshold: 60 s
    succeeded(engine, "a1", T0 + 1, 1.0)
    succeeded(engine, "a2", T0 + 2, 2.0)
    succeeded(engine, "a3", T0 + 3, 3.0)
    succeeded(engine, "b1", T0 + 4, 120.0, name="app.slow")
    add_row(engine, "b2", ts=T0 + 5, name="app.slow", runtime=None)
    add_row(engine, "old", state="SUCCESS", ts=T0 - 7200, name="app.old", runtime=1.0)
    login(client, "bob")
    page = client.get("/ui/statistics").text
    body = page.split("<tbody>")[1]
    cells = [re.sub(r"<[^>]+>", "", cell).strip()
             for cell in re.findall(r"<td[^>]*>(.*?)</td>", body, re.S)]
    assert cells == [
        "app.add", "3", "3", "0", "0", "0", "0", "1.000", "2.000 s", "1.000 s", "3.000 s",
        "3.000 s", "—",
        "app.slow", "2", "1", "1", "0", "0", "0", "0.500", "2 min 0 s", "2 min 0 s",
        "2 min 0 s", "2 min 0 s", "slow",
    ]
    assert "app.old" not in page
    by_name = client.get("/ui/statistics?sort=name&order=desc").text
    assert by_name.index(">app.slow<") < by_name.index(">app.add<")
    assert 'aria-sort="descending"' in by_name
    # The sorted column's heading flips the order; the others take their default.
    assert "/ui/statistics?window=1h&amp;sort=name&amp;order=asc" in by_name
    assert "/ui/statistics?window=1h&amp;sort=count&amp;order=desc" in by_name
    day = client.get("/ui/statistics?window=1d&sort=name").text
    assert day.index(">app.add<") < day.index(">app.old<") < day.index(">app.slow<")


def test_sort_stats_puts_missing_values_last_in_both_orders():
    def stat(name, p95):
        return TaskStats(name=name, count=1, succeeded=1, failed=0, revoked=0, rejected=0,
                         lost=0, success_ratio=1.0,
                         failure_ratio=0.0, avg_runtime=p95, min_runtime=p95, max_runtime=p95,
                         p95_runtime=p95, slow=False)

    tasks = [stat("b", 2.0), stat("a", None), stat("c", 1.0), stat(None, 3.0)]
    assert [t.name for t in sort_stats(tasks, "p95", "desc")] == [None, "b", "c", "a"]
    assert [t.name for t in sort_stats(tasks, "p95", "asc")] == ["c", "b", None, "a"]
    assert [t.name for t in sort_stats(tasks, "name", "desc")] == ["c", "b", "a", None]


def test_hostile_names_and_ids_are_escaped_on_every_page(client, engine):
    hostile_id = '<script>alert("id")</script>'
    hostile_name = "<img src=x onerror=alert(1)>"
    succeeded(engine, hostile_id, T0 + 1, 0.5, name=hostile_name, queue="<b>q</b>")
    add_row(engine, "<svg onload=x>", state="STARTED", name=hostile_name, started_at=T0)
    login(client, "alice")
    pages = [client.get("/ui/completed"), client.get("/ui/statistics"),
             client.get("/ui/running"), client.get("/ui/completed", params={"name": hostile_name}),
             client.get("/ui/waiting", params={"queue": hostile_name}),
             client.get("/ui/running/terminate", params={"task_id": hostile_id}),
             client.get("/ui/waiting/cancel", params={"task_id": hostile_id})]
    for page in pages:
        assert page.status_code == 200, page.text
        for raw in ("<script>", "<img", "<b>q", "<svg"):
            assert raw not in page.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in pages[0].text
    assert "/ui/tasks/%3Cscript%3Ealert%28%22id%22%29%3C%2Fscript%3E" in pages[0].text
    assert "&lt;svg onload=x&gt;" in pages[2].text


def test_the_pages_say_what_they_could_not_ask_without_poller_or_events(client, engine):
    add_row(engine, "r1", state="STARTED", name="app.long", hostname="celery@w1",
            started_at=T0 + 40)
    login(client, "alice")
    running = client.get("/ui/running").text
    assert rows_of(running) == ["r1"]
    assert "<td>celery@w1</td><td>unknown</td>" in running  # pool unknown: no poll round
    assert '<td class="num">1 min 0 s</td>' in running and "<td>events</td>" in running
    assert "Terminate…" in running
    waiting = client.get("/ui/waiting").text
    assert "Queues: the poller has not finished its first round yet" in waiting
    workers = client.get("/ui/workers").text
    assert "No worker known yet" in workers and "No inspect round has finished yet" in workers
    assert "No worker holds a task for later" in client.get("/ui/scheduled").text


def client_of(ctx, users_file: str) -> TestClient:
    """The real app over ``ctx`` (whose poll snapshot a test sets), clock at T0 + 100."""
    ctx.clock = lambda: T0 + 100
    app = create_ui(UiContext(ctx, load_users(users_file), clock=ctx.clock),
                    session_secret="s" * 40, secure_cookies=False)
    return TestClient(create_http_app(None, Health(), None, app), follow_redirects=False)


def test_terminate_is_not_offered_on_a_threads_pool_and_bad_or_late_requests_say_why(
        engine, users_file, redis_url):  # noqa: F811
    add_row(engine, "r1", state="STARTED", name="app.long", hostname="celery@w1",
            started_at=T0 + 40)
    add_row(engine, "done", state="SUCCESS")
    ctx = action_context(Settings(broker_url=redis_url, inspect_timeout=0.3), history=engine)
    ctx.poll_latest = lambda: PollSnapshot(taken_at=T0 + 99, duration=0.1,
                                           pools={"celery@w1": "threads"})
    client = client_of(ctx, users_file)
    try:
        login(client, "alice")
        running = client.get("/ui/running").text
        assert "<td>celery@w1</td><td>threads</td>" in running
        assert "cannot terminate (threads pool)" in running and "Terminate…" not in running
        preview = client.get("/ui/running/terminate?task_id=r1").text
        assert "Celery&#39;s threads pool cannot stop a running task" in preview
        assert 'action="/ui/running/terminate"' not in preview
        token = csrf_of(preview)
        refused = client.post("/ui/running/terminate", data={"csrftoken": token,
                                                             "task_id": "r1"})
        assert refused.status_code == 409 and "Nothing was sent." in refused.text
        bad = client.post("/ui/running/terminate", data={"csrftoken": token, "task_id": "r1",
                                                         "signal": "SIGFOO"})
        assert bad.status_code == 400 and "signal: one of SIGTERM" in bad.text
        late = client.post("/ui/running/terminate", data={"csrftoken": token,
                                                          "task_id": "done"})
        assert late.status_code == 409
        assert "the task already finished (SUCCESS); there is nothing to cancel" in late.text
        with engine.connect() as connection:
            assert connection.execute(select(ACTION_AUDIT.c.id)).all() == []
    finally:
        ctx.broker.app.close()  # type: ignore[attr-defined]


def test_waiting_on_rabbitmq_shows_the_counts_and_why_messages_cannot_be_listed(
        engine, users_file, amqp_url):  # noqa: F811
    ctx = action_context(Settings(broker_url=amqp_url, inspect_timeout=0.3), history=engine)
    ctx.poll_latest = lambda: PollSnapshot(taken_at=T0 + 99, duration=0.1, queues=(
        QueueState("jobs", {"": 4}, consumers=0),))
    client = client_of(ctx, users_file)
    try:
        login(client, "bob")
        page = client.get("/ui/waiting").text
        assert "<h2 id=\"messages\">Messages of jobs</h2>" in page
        assert ("waiting messages can be listed on Redis brokers only; this broker is amqp "
                "(AMQP has no way to read a message without taking it; use the RabbitMQ "
                "management UI)") in page
        assert "<p>4 waiting, 0 consumers (the broker's own counts).</p>" in page
    finally:
        ctx.broker.app.close()  # type: ignore[attr-defined]


def test_running_says_when_the_history_holds_more_started_executions_than_it_shows(
        client, engine, monkeypatch):
    from ui.pages import running

    monkeypatch.setattr(running, "HISTORY_LIMIT", 2)
    for i in range(3):
        add_row(engine, f"r{i}", state="STARTED", ts=T0 + i, started_at=T0 + i)
    login(client, "bob")
    page = client.get("/ui/running").text
    assert rows_of(page) == ["r1", "r2"]
    assert "History: more than 2 executions are STARTED; the 2 that started last are shown." \
        in page


def test_a_cancelled_task_says_what_happened_and_when_it_runs_again(client, engine):
    # Before: a CANCELLED row (task-cancelled: killed by its worker's cold shutdown) showed
    # the state alone, as if it waited, with a Cancel… button.
    add_row(engine, "t1", state="CANCELLED", hostname="celery@w1")
    login(client, "alice")
    page = client.get("/ui/tasks/t1").text
    note = re.search(r'<p class="warn" id="cancelled-note">(.*?)</p>', page, re.S)
    assert note is not None, page
    assert re.sub(r"<[^>]+>", "", note.group(1)) == (
        "Its worker killed it while shutting down cold or after losing its broker connection "
        "(task-cancelled): it ended with no outcome. It runs again only if the task is "
        "acks_late (the broker then delivers it anew, under the same id); otherwise nothing "
        "runs it again. Cancel… revokes it, so that such a new delivery is dropped.")
    add_row(engine, "t2", state="STARTED", hostname="celery@w1")
    assert 'id="cancelled-note"' not in client.get("/ui/tasks/t2").text


def test_the_audit_trail_shows_its_times_as_times(client, engine):
    # Before: "started_at: 1796317084.2254195", the epoch seconds as stored.
    add_row(engine, "t1", state="REVOKED", hostname="celery@w1")
    record_action(engine, actor="ui:alice", action="cancel", task_id="t1", at=T0,
                  detail={"state": "STARTED", "started_at": T0 - 0.25, "terminate": True})
    login(client, "alice")
    trail = client.get("/ui/tasks/t1").text.split('<h2 id="audit">')[1].split("</table>")[0]
    rows = [[re.sub(r"<[^>]+>", "", cell).strip()
             for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr>(.*?)</tr>", trail.split("<tbody>")[1], re.S)]
    assert rows[0] == [when(T0), "ui:alice", "cancel",
                       f"state: STARTED; started_at: {when(T0 - 0.25)}; terminate: True"]
    assert [row[2] for row in rows] == ["cancel", "cancel-outcome"]  # settled on reading
