"""The Failed page's failure groups follow the list's queue filter (over HTTP, real app and
SQLite history): counts and the latest message are those of the queue asked for.
"""

from __future__ import annotations

import re

from tests.ui.conftest import T0, add_row, login


def groups_of(page: str) -> list[list[str]]:
    """The failure groups table: exception, count, latest message."""
    table = page.split('aria-labelledby="groups"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr><td>(.*?)</tr>", table, re.S)
    return [[re.sub(r"<[^>]+>", "", cell).strip() for i, cell in
             enumerate(re.split(r"</td>\s*<td[^>]*>", row)) if i != 2]
            for row in rows]


def test_failure_groups_follow_the_queue_filter(client, engine):
    add_row(engine, "a1", ts=T0 + 1, queue="a", exception_message="a first")
    add_row(engine, "a2", ts=T0 + 2, queue="a", exception_message="a newest")
    add_row(engine, "b1", ts=T0 + 3, queue="b", exception_type="KeyError",
            exception_message="b key")
    add_row(engine, "b2", ts=T0 + 4, queue="b", exception_message="b newest value")
    login(client, "bob")

    on_a = client.get("/ui/failed", params={"queue": "a", "since": str(T0)})
    on_b = client.get("/ui/failed", params={"queue": "b", "since": str(T0)})
    anywhere = client.get("/ui/failed", params={"since": str(T0)})

    assert groups_of(on_a.text) == [["ValueError", "2", "a newest"]]
    assert groups_of(on_b.text) == [["ValueError", "1", "b newest value"],
                                    ["KeyError", "1", "b key"]]
    assert groups_of(anywhere.text) == [["ValueError", "3", "b newest value"],
                                        ["KeyError", "1", "b key"]]
    assert "not its queue" not in on_a.text
