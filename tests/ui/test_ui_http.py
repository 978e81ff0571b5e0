"""The job browser over HTTP with the real app: login, sessions, CSRF, roles, error pages and
escaping. A real SQLite history and a real Redis broker; no browser (see test_browser.py).
"""

from __future__ import annotations

import logging
import os
import re

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from starlette.testclient import TestClient

from exporter.cli.commands import main
from exporter.history import get_execution
from exporter.history.orm import ACTION_AUDIT
from exporter.http import create_http_app
from exporter.state.health import Health
from tests.ui.conftest import PASSWORDS, T0, add_row, csrf_of, login
from ui.app import disabled_ui, page_modules
from ui.users import UsersFileError, authenticate, load_users, parse_users


def _routes(method: str) -> list[str]:
    """Every path of the UI's page modules answering ``method``, path parameters filled with
    ``t1``: pages added later are covered too.
    """
    paths = []
    for module in page_modules():
        for route in module.router.routes:
            if method in route.methods:
                paths.append("/ui" + re.sub(r"\{[^}]+\}", "t1", route.path))
    return sorted(set(paths))


#: Every page but the login form, with a query where one is needed.
PAGES = [path + ("?task_id=t1" if path.endswith("/search") else "")
         for path in _routes("GET") if path != "/ui/login"]
POSTS = _routes("POST")


def test_the_routes_found_include_the_known_pages():
    assert {"/ui/", "/ui/failed", "/ui/failed/retry", "/ui/tasks/t1", "/ui/tasks/t1/retry",
            "/ui/tasks/t1/cancel", "/ui/search?task_id=t1"} <= set(PAGES)
    assert {"/ui/login", "/ui/logout", "/ui/tasks/t1/retry", "/ui/tasks/t1/cancel",
            "/ui/failed/retry"} <= set(POSTS)


def once_of(page: str) -> str:
    """The one-time token of a confirmation form."""
    return re.search(r'name="once" value="([^"]+)"', page).group(1)


def audit_rows(engine):
    with engine.connect() as connection:
        return connection.execute(select(ACTION_AUDIT.c.actor, ACTION_AUDIT.c.action,
                                         ACTION_AUDIT.c.task_id)).all()


@pytest.mark.parametrize("path", PAGES)
def test_every_page_without_a_session_redirects_to_the_login(client, path):
    response = client.get(path)
    assert response.status_code == 303, response.text
    assert response.headers["location"].startswith("/ui/login?next=%2Fui%2F")
    # a forged session cookie is no session
    client.cookies.set("jobmon_ui_session", "eyJ1c2VyIjogImFsaWNlIn0=.forged.sig")
    assert client.get(path).status_code == 303


def test_the_login_goes_back_to_the_page_asked_for_and_never_off_site(client, engine):
    add_row(engine, "t1")
    page = client.get("/ui/login?next=/ui/failed%3Fname%3Dapp.charge")
    token = csrf_of(page.text)
    assert 'name="next" value="/ui/failed?name=app.charge"' in page.text
    response = client.post("/ui/login", data={"username": "bob", "password": PASSWORDS["bob"],
                                              "csrftoken": token,
                                              "next": "/ui/failed?name=app.charge"})
    assert (response.status_code, response.headers["location"]) == (
        303, "/ui/failed?name=app.charge")
    client.post("/ui/logout", data={"csrftoken": token})
    for target in ("https://evil.example/", "//evil.example/ui/", "/ui\\@evil"):
        response = client.post("/ui/login", data={
            "username": "bob", "password": PASSWORDS["bob"], "csrftoken": token,
            "next": target})
        assert response.headers["location"] == "/ui/", target
        client.post("/ui/logout", data={"csrftoken": token})


def test_the_login_sets_an_httponly_samesite_session_cookie_never_secure_without_tls(client):
    page = client.get("/ui/login")
    response = client.post("/ui/login", data={
        "username": "alice", "password": PASSWORDS["alice"], "csrftoken": csrf_of(page.text)})
    cookie = next(v for k, v in response.headers.multi_items()
                  if k == "set-cookie" and v.startswith("jobmon_ui_session="))
    attributes = [part.strip().lower() for part in cookie.split(";")[1:]]
    assert "httponly" in attributes and "samesite=lax" in attributes
    assert "path=/ui" in attributes and "secure" not in attributes


def test_a_wrong_password_and_an_unknown_user_get_the_same_401_and_are_logged(client, caplog):
    page = client.get("/ui/login")
    token = csrf_of(page.text)
    with caplog.at_level(logging.WARNING, logger="ui.pages.login"):
        wrong = client.post("/ui/login", data={"username": "alice", "password": "nope-nope",
                                               "csrftoken": token})
        unknown = client.post("/ui/login", data={"username": "mallory", "password": "x",
                                                 "csrftoken": token})
    for response in (wrong, unknown):
        assert response.status_code == 401
        assert "Unknown user name or wrong password." in response.text
        assert "jobmon_ui_session" not in response.headers.get("set-cookie", "")
    assert [r.getMessage() for r in caplog.records] == [
        "ui login failed user='alice' client=testclient",
        "ui login failed user='mallory' client=testclient"]
    assert "nope-nope" not in caplog.text


@pytest.mark.parametrize("path", POSTS)
def test_every_post_without_a_csrf_token_is_refused(client, engine, path):
    add_row(engine, "t1")
    login(client, "alice")
    for data in ({}, {"csrftoken": "forged"}):
        response = client.post(path, data={"username": "alice",
                                           "password": PASSWORDS["alice"], **data})
        assert response.status_code == 403, response.text
        assert "form refused" in response.text
    # Without any cookie at all (asgi-csrf would let those through by default).
    bare = TestClient(client.app, follow_redirects=False)
    response = bare.post(path, data={"username": "alice", "password": PASSWORDS["alice"]})
    assert response.status_code == 403 and "form refused" in response.text
    assert client.get("/ui/").status_code == 200  # still logged in: logout was refused too
    assert audit_rows(engine) == []
    assert get_execution(engine, "t1").manual_retry_count == 0


def test_a_viewer_cannot_retry_or_cancel(client, engine):
    add_row(engine, "t1")
    login(client, "bob")
    page = client.get("/ui/tasks/t1")
    assert page.status_code == 200
    assert "Retry…" not in page.text and "Cancel…" not in page.text
    assert "retry and cancel need an operator" in page.text
    token = csrf_of(page.text)
    for path in ("/ui/tasks/t1/retry", "/ui/tasks/t1/cancel", "/ui/failed/retry"):
        assert client.get(path).status_code == 403
        response = client.post(path, data={"csrftoken": token})
        assert response.status_code == 403, response.text
        assert "Your role (viewer) cannot retry or cancel tasks" in response.text
        assert "Nothing was done." in response.text
    assert audit_rows(engine) == []
    assert get_execution(engine, "t1").manual_retry_count == 0


@pytest.mark.parametrize(("query", "error"), [
    ("since=tomorrow", "since: an ISO 8601 time"),
    ("since=2024-05-02T00:00&until=2024-05-01T00:00", "until: must be later than since"),
    ("name=a%0Ab", "name: 1 to 255 characters, no control characters"),
    ("exception=" + "E" * 300, "exception: String should have at most 255 characters"),
    ("cursor=garbage", "cursor: not a cursor of this list"),
])
def test_bad_filters_give_a_readable_400_page(client, query, error):
    login(client, "bob")
    response = client.get(f"/ui/failed?{query}")
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "400 — Invalid parameter" in response.text and error in response.text


def test_search_opens_the_task_and_refuses_control_characters(client, engine):
    add_row(engine, "t 1/x")
    login(client, "bob")
    response = client.get("/ui/search", params={"task_id": " t 1/x "})
    assert (response.status_code, response.headers["location"]) == (303, "/ui/tasks/t%201%2Fx")
    assert "<code>t 1/x</code>" in client.get(response.headers["location"]).text
    assert client.get("/ui/search", params={"task_id": "a\nb"}).status_code == 400
    missing = client.get("/ui/tasks/nope")
    assert missing.status_code == 404 and "no task &#39;nope&#39; in the history" in missing.text


def test_hostile_task_ids_and_names_are_escaped(client, engine):
    hostile_id = '<script>alert("id")</script>'
    hostile_name = "<img src=x onerror=alert(1)>"
    add_row(engine, hostile_id, name=hostile_name, exception_type="<b>Boom</b>",
            exception_message="<i>msg</i>", traceback="<script>tb()</script>",
            args="('<svg onload=x>',)")
    login(client, "alice")
    pages = [client.get("/ui/failed"), client.get("/ui/tasks/" + hostile_id),
             client.get("/ui/failed", params={"name": hostile_name})]
    for page in pages:
        assert page.status_code == 200, page.text
        for raw in ("<script>", "<img", "<b>Boom", "<i>msg", "<svg"):
            assert raw not in page.text
    assert "&lt;script&gt;alert(&#34;id&#34;)&lt;/script&gt;" in pages[1].text
    assert "&lt;img src=x onerror=alert(1)&gt;" in pages[0].text
    assert "/ui/tasks/%3Cscript%3Ealert%28%22id%22%29%3C%2Fscript%3E" in pages[0].text


def test_an_operator_retry_previews_then_sends_and_records_the_ui_user(client, engine):
    add_row(engine, "t1", args="(1, 'a')", kwargs="{'x': 2}")
    login(client, "alice")
    preview = client.get("/ui/tasks/t1/retry")
    assert preview.status_code == 200
    assert "Nothing has been sent yet." in preview.text
    assert '<code>[1, "a"]</code>' in preview.text
    assert get_execution(engine, "t1").manual_retry_count == 0
    form = {"csrftoken": csrf_of(preview.text), "once": once_of(preview.text)}
    done = client.post("/ui/tasks/t1/retry", data=form)
    assert done.status_code == 202, done.text
    assert "Retry sent" in done.text
    again = client.post("/ui/tasks/t1/retry", data=form)  # the answer page reloaded
    assert again.status_code == 409 and "nothing was sent again" in again.text
    row = get_execution(engine, "t1")
    assert row.manual_retry_count == 1
    [(actor, action, task_id)] = audit_rows(engine)
    assert (actor, action, task_id) == ("ui:alice", "retry", "t1")
    detail = client.get("/ui/tasks/t1").text
    assert "ui:alice" in detail and "Manually retried as" in detail


def test_a_retry_of_a_task_that_is_not_failed_is_a_409_page_saying_why(client, engine):
    add_row(engine, "ok", state="SUCCESS")
    login(client, "alice")
    response = client.get("/ui/tasks/ok/retry")
    assert response.status_code == 409
    assert "the task is SUCCESS: only FAILURE, LOST and CANCELLED tasks are retried" in \
        response.text


def test_a_cancel_says_what_was_asked_and_that_no_worker_acknowledged(client, engine):
    add_row(engine, "w1", state="PENDING", exception_type=None, exception_message=None,
            traceback=None)
    login(client, "alice")
    confirm = client.get("/ui/tasks/w1/cancel")
    assert confirm.status_code == 200 and "Terminate" not in confirm.text
    done = client.post("/ui/tasks/w1/cancel", data={"csrftoken": csrf_of(confirm.text)})
    assert done.status_code == 202, done.text
    assert "Asked: <strong>revoke</strong>" in done.text
    assert "acknowledged by</dt><dd>no worker" in done.text
    assert [tuple(r) for r in audit_rows(engine)] == [("ui:alice", "cancel", "w1")]


def test_bulk_retry_previews_then_retries_what_matches(client, engine):
    add_row(engine, "a1", ts=1_700_000_001.0, exception_type="KeyError")
    add_row(engine, "a2", ts=1_700_000_002.0, exception_type="KeyError")
    add_row(engine, "b1", ts=1_700_000_003.0)
    login(client, "alice")
    listing = client.get("/ui/failed?exception=KeyError")
    assert listing.text.count("/ui/tasks/a") >= 2 and "/ui/tasks/b1" not in listing.text
    preview = client.get("/ui/failed/retry?exception=KeyError")
    assert "2 would be retried, 0 skipped" in preview.text
    rows = re.findall(r"<tr><td><a[^>]*><code>(\w+)</code></a></td>\s*<td>([^<]*)</td>"
                      r"<td>([^<]*)</td>", preview.text)
    assert rows == [("a2", "app.charge", "KeyError"), ("a1", "app.charge", "KeyError")]
    assert audit_rows(engine) == []
    form = {"csrftoken": csrf_of(preview.text), "once": once_of(preview.text),
            "exception": "KeyError"}
    done = client.post("/ui/failed/retry", data=form)
    assert done.status_code == 200, done.text
    assert "2 sent as new tasks, 0 skipped, of 2 selected" in done.text
    again = client.post("/ui/failed/retry", data=form)
    assert again.status_code == 409 and "nothing was sent again" in again.text
    assert sorted((a, act, t) for a, act, t in audit_rows(engine)) == [
        ("ui:alice", "bulk-retry", None), ("ui:alice", "retry", "a1"),
        ("ui:alice", "retry", "a2")]


def test_without_a_users_file_the_ui_is_off_with_a_403_saying_how_to_turn_it_on():
    client = TestClient(create_http_app(None, Health(), None, disabled_ui()))
    for path in ("/ui/", "/ui/login", "/ui/failed"):
        response = client.get(path)
        assert response.status_code == 403
        assert "--ui-users-file" in response.text and "ui-user add" in response.text


def test_ui_user_add_writes_argon2_hashes_and_replaces_a_user(tmp_path):
    path = str(tmp_path / "users")
    runner = CliRunner()
    result = runner.invoke(main, ["ui-user", "add", "carol", "--role", "operator",
                                  "--users-file", path, "--password-stdin"],
                           input="carol-password\n")
    assert result.exit_code == 0, result.output
    assert result.output == f"added carol (operator) in {path}\n"
    assert os.stat(path).st_mode & 0o777 == 0o600
    result = runner.invoke(main, ["ui-user", "add", "carol", "--users-file", path,
                                  "--password-stdin"], input="another-password\n")
    assert result.output == f"replaced carol (viewer) in {path}\n"
    users = load_users(path)
    assert list(users) == ["carol"] and users["carol"].role == "viewer"
    assert users["carol"].password_hash.startswith("$argon2id$")
    assert "another-password" not in open(path).read()
    assert authenticate(users, "carol", "another-password") == users["carol"]
    assert authenticate(users, "carol", "carol-password") is None
    short = runner.invoke(main, ["ui-user", "add", "dave", "--users-file", path,
                                 "--password-stdin"], input="short\n")
    assert short.exit_code == 2 and "at least 8 characters" in short.output


def test_ui_user_add_creates_a_missing_directory_0700_or_says_which_it_cannot(tmp_path):
    # The README's `ui-user add … --users-file /etc/celery-jobmon/ui-users` on a new host.
    directory = tmp_path / "etc" / "celery-jobmon"
    path = str(directory / "ui-users")
    runner = CliRunner()
    result = runner.invoke(main, ["ui-user", "add", "carol", "--users-file", path,
                                  "--password-stdin"], input="carol-password\n")
    assert (result.exit_code, result.exception) == (0, None), result.output
    assert result.output == (f"created {tmp_path / 'etc'}, {directory} (mode 0700)\n"
                             f"added carol (viewer) in {path}\n")
    assert [os.stat(d).st_mode & 0o777 for d in (directory, directory.parent)] == [0o700] * 2
    assert os.stat(path).st_mode & 0o777 == 0o600 and list(load_users(path)) == ["carol"]
    # A parent that is a file: one line naming what could not be created, no traceback.
    (tmp_path / "plain").write_text("")
    blocked = str(tmp_path / "plain" / "dir" / "ui-users")
    result = runner.invoke(main, ["ui-user", "add", "carol", "--users-file", blocked,
                                  "--password-stdin"], input="carol-password\n")
    assert result.exit_code == 1 and not isinstance(result.exception, OSError)
    assert result.output == (f"Error: {blocked}: cannot create the directory "
                             f"{tmp_path / 'plain' / 'dir'}: Not a directory\n")


def test_a_bad_users_file_lists_every_bad_line():
    with pytest.raises(UsersFileError) as caught:
        parse_users("# users\nalice:admin:$argon2id$x\nbad name:viewer:$argon2id$x\n"
                    "bob:viewer:plain\nok:viewer:$argon2id$x\nok:viewer:$argon2id$y\n", "f")
    assert str(caught.value).splitlines() == [
        "f:2: role must be viewer or operator",
        "f:3: the name must be 1 to 64 letters, digits or ._@-",
        "f:4: not an argon2 hash (write it with `celery-jobmon ui-user add`)",
        "f:6: user 'ok' is listed twice"]


def test_under_tls_both_cookies_are_secure(engine, users_file, redis_url):  # noqa: F811
    from actions.wiring import action_context
    from exporter.config import Settings
    from ui.access import UiContext
    from ui.app import create_ui

    ctx = action_context(Settings(broker_url=redis_url), history=engine)
    try:
        app = create_ui(UiContext(ctx, load_users(users_file)), session_secret="s" * 40,
                        secure_cookies=True)
        client = TestClient(create_http_app(None, Health(), None, app),
                            base_url="https://testserver", follow_redirects=False)
        page = client.get("/ui/login")
        csrf_cookie = page.headers["set-cookie"]
        assert csrf_cookie.startswith("jobmon_ui_csrf=") and "Secure" in csrf_cookie
        response = client.post("/ui/login", data={
            "username": "bob", "password": PASSWORDS["bob"], "csrftoken": csrf_of(page.text)})
        session = response.headers["set-cookie"]
        assert session.startswith("jobmon_ui_session=") and "; secure" in session
    finally:
        ctx.broker.app.close()


def test_serve_refuses_a_missing_or_broken_users_file_and_a_short_secret(tmp_path, redis_url):  # noqa: F811
    from exporter.config import Settings
    from ui.app import ui_from_settings

    broken = tmp_path / "users"
    broken.write_text("alice:root:$argon2id$x\n")
    short = tmp_path / "secret"
    short.write_text("too-short\n")
    common = ("serve", "--broker-url", redis_url, "--history-url",
              f"sqlite:///{tmp_path / 'h.sqlite3'}")
    missing = CliRunner().invoke(main, [
        *common, "--ui-users-file", str(tmp_path / "nope"), "--ui-session-secret-file",
        str(short), "--grafana-url", "grafana"])
    assert missing.exit_code == 2
    for line in (f"--ui-users-file: no such file: {tmp_path / 'nope'}",
                 "--ui-session-secret-file: at least 32 characters",
                 "--grafana-url: an http:// or https:// URL"):
        assert line in missing.output, missing.output
    assert "too-short" not in missing.output
    with pytest.raises(UsersFileError, match=f"^{broken}:1: role must be viewer or operator$"):
        ui_from_settings(Settings(ui_users_file=str(broken)), None)  # type: ignore[arg-type]


def test_ui_without_a_slash_goes_to_the_overview(client):
    response = client.get("/ui")
    assert response.status_code in (307, 308)
    assert response.headers["location"].endswith("/ui/")


def test_the_failed_list_pages_with_a_cursor_and_keeps_the_filter(client, engine):
    for i in range(52):
        add_row(engine, f"p{i:02d}", ts=T0 + i, queue="q" if i % 2 else "b")
    add_row(engine, "ok", state="SUCCESS", ts=T0 + 100, queue="q")
    login(client, "bob")
    first = client.get("/ui/failed?queue=q")
    ids = re.findall(r'href="/ui/tasks/(p\d\d)"', first.text)
    assert ids == [f"p{i:02d}" for i in range(51, 0, -2)]  # 26 rows: one page
    assert "Next page" not in first.text
    everything = client.get("/ui/failed")
    assert len(re.findall(r'href="/ui/tasks/(p\d\d)"', everything.text)) == 50
    next_link = re.search(r'rel="next" href="([^"]+)"', everything.text).group(1)
    second = client.get(next_link.replace("&amp;", "&"))
    assert re.findall(r'href="/ui/tasks/(p\d\d)"', second.text) == ["p01", "p00"]
    assert "First page" in second.text and "Next page" not in second.text
    grouped = re.search(r'<a href="(/ui/failed\?[^"]*exception=ValueError[^"]*)">ValueError</a>',
                        client.get("/ui/failed?queue=q").text)
    assert grouped and "queue=q" in grouped.group(1)


def test_the_overview_lists_slow_tasks_and_executions_running_for_over_an_hour(client, engine):
    add_row(engine, "slow1", state="SUCCESS", ts=T0, runtime=120.0, name="app.slow")
    add_row(engine, "slow2", state="SUCCESS", ts=T0, runtime=30.0, name="app.slow")
    add_row(engine, "fast", state="SUCCESS", ts=T0, runtime=1.0, name="app.fast")
    add_row(engine, "stuck1", state="STARTED", ts=T0 - 7200, started_at=T0 - 7200,
            hostname="w1@h", name="app.stuck")
    add_row(engine, "recent", state="STARTED", ts=T0 - 600, started_at=T0 - 600)
    login(client, "bob")
    page = client.get("/ui/").text
    slow = page[page.index('id="slow"'):page.index('id="stuck"')]
    assert re.findall(r"<td>(.*?)</td>", slow) == [
        '<a href="/ui/statistics?name=app.slow">app.slow</a>']
    assert "1 min 15 s" in slow and "2 min 0 s" in slow  # average, max
    stuck = page[page.index('id="stuck"'):page.index('id="queues"')]
    assert "stuck1" in stuck and "recent" not in stuck
    assert "2 h 1 min" in stuck  # T0 + 100 - (T0 - 7200)


def test_a_revoked_task_is_retried_from_its_page(client, engine):
    add_row(engine, "rv", state="REVOKED", exception_type=None, exception_message=None,
            traceback=None)
    login(client, "alice")
    page = client.get("/ui/tasks/rv").text
    assert '<input type="hidden" name="include_revoked" value="true">' in page
    assert client.get("/ui/tasks/rv/retry").status_code == 409  # not without the flag
    preview = client.get("/ui/tasks/rv/retry?include_revoked=true")
    assert preview.status_code == 200 and "Nothing has been sent yet." in preview.text
    done = client.post("/ui/tasks/rv/retry", data={
        "csrftoken": csrf_of(preview.text), "once": once_of(preview.text),
        "include_revoked": "true"})
    assert done.status_code == 202 and "Retry sent" in done.text
    assert get_execution(engine, "rv").manual_retry_count == 1


def test_a_confirmation_sends_once_and_only_the_latest_one_counts(client, engine):
    add_row(engine, "t1")
    login(client, "alice")
    first = client.get("/ui/tasks/t1/retry").text
    second = client.get("/ui/tasks/t1/retry").text
    stale = client.post("/ui/tasks/t1/retry", data={"csrftoken": csrf_of(first),
                                                    "once": once_of(first)})
    assert stale.status_code == 409
    missing = client.post("/ui/tasks/t1/retry", data={"csrftoken": csrf_of(first)})
    assert missing.status_code == 409
    assert get_execution(engine, "t1").manual_retry_count == 0
    done = client.post("/ui/tasks/t1/retry", data={"csrftoken": csrf_of(second),
                                                   "once": once_of(second)})
    assert done.status_code == 202
    assert get_execution(engine, "t1").manual_retry_count == 1


def test_serve_mounts_the_ui_next_to_the_api_on_api_listen(tmp_path, users_file):
    from exporter.app import build_service
    from exporter.config import Settings

    def ui_status(app) -> int:
        return TestClient(app, follow_redirects=False).get("/ui/").status_code

    history = f"sqlite:///{tmp_path / 'history.sqlite'}"
    common = {"broker_url": "memory://localhost//", "history_url": history, "repair": False,
              "ui_users_file": users_file}
    together = build_service(Settings(**common).validate())
    apart = build_service(Settings(**common, api_listen=("127.0.0.1", 9)).validate())
    off = build_service(Settings(**{**common, "ui_users_file": None}).validate())
    try:
        assert ui_status(together.http) == 303  # to the login
        assert ui_status(apart.http) == 404 and ui_status(apart.api_http) == 303
        assert ui_status(off.http) == 403
    finally:
        for service in (together, apart, off):
            service.stop()
