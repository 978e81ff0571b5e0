"""Small API fixes found by a newcomer: statistics show every terminal state they count, and a
400 lists every bad parameter. A real SQLite history, the fake broker of
:mod:`.test_actions_api`.
"""
# ruff: noqa: F811

from __future__ import annotations

import pytest

from .test_actions_api import (  # noqa: F401
    T0,
    add_row,
    broker,
    client,
    engine,
    make_client,
    problem,
)


def test_task_statistics_count_revoked_rejected_and_lost_in_their_own_fields(make_client,
                                                                             engine):
    for i in range(9):
        add_row(engine, f"s{i}", "SUCCESS", ts=T0 + i, name="app.a", runtime=1.0)
    add_row(engine, "r1", "REVOKED", ts=T0 + 20, name="app.a")
    add_row(engine, "r2", "REVOKED", ts=T0 + 21, name="app.a")
    add_row(engine, "j1", "REJECTED", ts=T0 + 22, name="app.b", finished_at=T0 + 22)
    add_row(engine, "l1", "LOST", ts=T0 + 23, name="app.b", finished_at=T0 + 23)
    body = make_client().get("/api/v1/stats/tasks?window=1h").json()
    assert [{k: t[k] for k in ("name", "count", "succeeded", "failed", "revoked", "rejected",
                               "lost", "success_ratio")} for t in body["tasks"]] == [
        {"name": "app.a", "count": 11, "succeeded": 9, "failed": 0, "revoked": 2,
         "rejected": 0, "lost": 0, "success_ratio": 9 / 11},
        {"name": "app.b", "count": 2, "succeeded": 0, "failed": 0, "revoked": 0,
         "rejected": 1, "lost": 1, "success_ratio": 0.0}]


def test_a_400_lists_every_bad_parameter(client):
    body = problem(client.get("/api/v1/tasks?state=BOGUS&since=notadate&name=%0A"), 400)
    assert [e["loc"] for e in body["errors"]] == [
        ["query", "state"], ["query", "name"], ["query", "since"]]
    assert body["errors"][0]["msg"].startswith("unknown state 'BOGUS'; one of PENDING")
    assert body["errors"][1]["msg"] == "1 to 255 characters, no control characters"
    assert body["errors"][2]["msg"].startswith("an ISO 8601 time (2024-05-01T12:00:00Z)")
    assert body["detail"].startswith("state: unknown state 'BOGUS'")
    assert "; name: 1 to 255 characters" in body["detail"]
    assert "; since: an ISO 8601 time" in body["detail"]
    stats = problem(client.get("/api/v1/stats/tasks?window=0&name=%0A"), 400)
    assert [e["loc"] for e in stats["errors"]] == [["query", "window"], ["query", "name"]]


def test_one_bad_parameter_is_listed_in_errors_too(client):
    body = problem(client.get("/api/v1/tasks?state=sideways"), 400)
    assert body["errors"] == [{"loc": ["query", "state"], "msg": body["detail"][len("state: "):]}]


@pytest.mark.parametrize("empty", ["state", "name", "queue", "exception_type", "since", "until",
                                   "cursor"])
def test_an_empty_filter_is_one_not_given(client, engine, empty):
    add_row(engine, "t1")
    response = client.get(f"/api/v1/tasks?{empty}=")
    assert response.status_code == 200, response.text
    assert [t["task_id"] for t in response.json()["items"]] == ["t1"]
