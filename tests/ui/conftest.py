"""Fixtures of the job browser's tests: a history with rows, a users file with an operator
(``alice``) and a viewer (``bob``), and the real HTTP app (``create_http_app`` with the UI
mounted) over a real Redis broker, driven by Starlette's TestClient.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import insert
from starlette.testclient import TestClient

from actions.wiring import action_context
from exporter.config import Settings
from exporter.history import create_history_engine, upgrade
from exporter.history.orm import TASK_EXECUTION
from exporter.http import create_http_app
from exporter.state.health import Health
from ui.access import UiContext
from ui.app import create_ui
from ui.users import add_user

T0 = 1_700_000_000.0
PASSWORDS = {"alice": "alice-password", "bob": "bob-password"}
SECRET = "ui-test-session-secret-0123456789abcdef"


@pytest.fixture(scope="session")
def users_file(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("ui") / "users")
    add_user(path, "alice", "operator", PASSWORDS["alice"])
    add_user(path, "bob", "viewer", PASSWORDS["bob"])
    return path


@pytest.fixture
def engine(tmp_path):
    engine = create_history_engine(f"sqlite:///{tmp_path / 'history.sqlite3'}")
    upgrade(engine)
    yield engine
    engine.dispose()


def add_row(engine, task_id: str, state: str = "FAILURE", ts: float = T0, **fields: Any) -> None:
    """One history row (a failed `app.charge` on queue b by default)."""
    values = {"task_id": task_id, "name": "app.charge", "state": state, "state_ts": ts,
              "queue": "b", "routing_key": "b", "args": "(1, 'a')", "kwargs": "{'x': 2}",
              "exception_type": "ValueError" if state == "FAILURE" else None,
              "exception_message": "bad value\nsecond line" if state == "FAILURE" else None,
              "traceback": "Traceback (most recent call last):\n  File \"x.py\", line 1\n"
                           "ValueError: bad value" if state == "FAILURE" else None,
              "updated_at": ts,
              "finished_at": ts if state in ("FAILURE", "SUCCESS", "REVOKED") else None}
    values.update(fields)
    with engine.begin() as connection:
        connection.execute(insert(TASK_EXECUTION).values(**values))


@pytest.fixture
def make_client(engine, users_file, redis_url) -> Iterator[Callable[..., TestClient]]:  # noqa: F811
    from ui.users import load_users

    settings = Settings(broker_url=redis_url, inspect_timeout=0.3)
    contexts = []

    def make(clock: Callable[[], float] = lambda: T0 + 100, **ui: Any) -> TestClient:
        ctx = action_context(settings, history=engine)
        ctx.clock = clock
        contexts.append(ctx)
        app = create_ui(UiContext(ctx, load_users(users_file), clock=clock, **ui),
                        session_secret=SECRET, secure_cookies=False,
                        secrets={"s3cret-password"})
        return TestClient(create_http_app(None, Health(), None, app), follow_redirects=False)

    yield make
    for ctx in contexts:
        ctx.broker.app.close()  # type: ignore[attr-defined]


@pytest.fixture
def client(make_client) -> TestClient:
    return make_client()


def csrf_of(page: str) -> str:
    """The CSRF token a page's forms post."""
    match = re.search(r'name="csrftoken" value="([^"]+)"', page)
    assert match, page
    return match.group(1)


def login(client: TestClient, name: str) -> None:
    """Log ``name`` in through the login form (GET for the CSRF cookie and token, POST)."""
    page = client.get("/ui/login")
    assert page.status_code == 200, page.text
    response = client.post("/ui/login", data={
        "username": name, "password": PASSWORDS[name], "csrftoken": csrf_of(page.text),
        "next": "/ui/"})
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/ui/"
