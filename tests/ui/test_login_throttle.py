"""Failed logins are throttled per user name and per client address (ui/throttle.py), over
HTTP against the real app: 429 with Retry-After and a readable login page, no session, a log
line; a success clears its user name's count.
"""

from __future__ import annotations

import logging

from starlette.testclient import TestClient

from tests.ui.conftest import PASSWORDS, csrf_of
from ui.throttle import LoginThrottle


def attempt(client: TestClient, name: str, password: str):
    page = client.get("/ui/login")
    return client.post("/ui/login", data={"username": name, "password": password,
                                          "csrftoken": csrf_of(page.text), "next": "/ui/"})


def test_a_sixth_failed_login_in_a_minute_is_refused_with_retry_after(make_client, caplog):
    client = make_client()
    caplog.set_level(logging.WARNING, logger="ui.pages.login")
    statuses = [attempt(client, "alice", "wrong").status_code for _ in range(5)]

    refused = attempt(client, "alice", PASSWORDS["alice"])  # even the right password

    assert statuses == [401] * 5
    assert refused.status_code == 429
    wait = int(refused.headers["Retry-After"])
    assert 50 <= wait <= 60, wait
    assert (f"Too many failed logins for this user name: try again in {wait} s. The password "
            "was not checked.") in refused.text
    assert "location" not in refused.headers
    assert client.get("/ui/").status_code == 303  # no session: back to the login
    assert [r.getMessage() for r in caplog.records] == [
        "ui login failed user='alice' client=testclient"] * 5 + [
        f"ui login throttled user='alice' client=testclient by=user limit='5 per 1 minute' "
        f"retry_after={wait}"]
    # Another user from the same address is not held up by alice's count.
    assert attempt(client, "bob", PASSWORDS["bob"]).status_code == 303


def test_one_address_guessing_many_names_is_refused_after_twenty(make_client):
    client = make_client()
    statuses = [attempt(client, f"guess{i}", "wrong").status_code for i in range(20)]

    refused = attempt(client, "bob", PASSWORDS["bob"])

    assert statuses == [401] * 20
    assert refused.status_code == 429
    assert "Too many failed logins from your address" in refused.text


def test_a_successful_login_clears_the_user_names_count(make_client):
    client = make_client(login_throttle=LoginThrottle(per_user="3/minute"))
    before = [attempt(client, "alice", "wrong").status_code for _ in range(2)]
    assert attempt(client, "alice", PASSWORDS["alice"]).status_code == 303
    client.post("/ui/logout", data={"csrftoken": csrf_of(client.get("/ui/").text)})

    after = [attempt(client, "alice", "wrong").status_code for _ in range(4)]

    assert before == [401, 401]
    assert after == [401, 401, 401, 429]
