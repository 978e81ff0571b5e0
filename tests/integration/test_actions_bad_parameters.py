"""Every 400 of a real ``celery-jobmon serve``'s action API lists every bad parameter in
``errors`` (``{"loc": [where, parameter], "msg": ...}``) with a message in words: the same rule
reads the same wherever it is broken, a pattern or a parser's jargon is never shown.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.api import PROBLEM, Api

pytestmark = pytest.mark.integration
TOKEN = "test-token-bad-parameters-0123456789"
TIME = ("an ISO 8601 time (2024-05-01T12:00:00Z) or seconds since the epoch between 0 and "
        "253402300799")
IDENTIFIER = "1 to 255 characters, no control characters"


def errors_of(response: httpx.Response) -> list[dict[str, Any]]:
    """The ``errors`` of a 400 problem, after checking that ``detail`` names each of them."""
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert "errors" in body, body
    for error in body["errors"]:
        assert f"{error['loc'][-1]}: {error['msg']}" in body["detail"], body
    return body["errors"]


def test_every_400_lists_every_bad_parameter_in_words(redis_server, start_exporter):
    # Before: the bulk retry reported only `since` of since+until and only `limit` of
    # since+limit, a bad cursor and since > until had no `errors`, a task id with a control
    # character showed the regex and bad JSON read "18: JSON decode error".
    exporter = start_exporter(redis_server.url(), "--api-token", TOKEN)
    api = Api(exporter.url, TOKEN)

    assert errors_of(api.post("/tasks/retry", {"since": "yesterday", "until": "tomorrow"})) == [
        {"loc": ["body", "since"], "msg": TIME}, {"loc": ["body", "until"], "msg": TIME}]
    assert errors_of(api.post("/tasks/retry", {"since": "yesterday", "limit": 0})) == [
        {"loc": ["body", "since"], "msg": TIME},
        {"loc": ["body", "limit"], "msg": "Input should be greater than or equal to 1"}]
    assert errors_of(api.post("/tasks/retry", {"since": "2024-02-01", "until": "2024-01-01",
                                               "name": "a\x01b"})) == [
        {"loc": ["body", "name"], "msg": IDENTIFIER},
        {"loc": ["body", "until"], "msg": "must be later than since"}]
    assert errors_of(api.get("/tasks", cursor="garbage", since="nope")) == [
        {"loc": ["query", "since"], "msg": TIME},
        {"loc": ["query", "cursor"],
         "msg": "not a cursor this API returned (pass next_cursor unchanged)"}]
    assert errors_of(api.get("/tasks", since="2024-02-01", until="2024-01-01")) == [
        {"loc": ["query", "until"], "msg": "must be later than since"}]
    for path in ("/tasks/%0A", "/tasks/a%7Fb/workflow", "/queues/%0A/pending"):
        assert errors_of(httpx.get(api.base + path, headers=api.headers)) == [
            {"loc": ["path", "queue" if "queues" in path else "task_id"], "msg": IDENTIFIER}]

    bad_json = httpx.post(api.base + "/tasks/retry", content=b'{"since": "x",\n "limit": }',
                          headers={**api.headers, "content-type": "application/json"})
    assert errors_of(bad_json) == [
        {"loc": ["body"], "msg": "not valid JSON: expecting value at line 2, column 11"}]
