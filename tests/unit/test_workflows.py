"""Workflows (issue 18): what the canvas leaves in events, the history's group id, the tree of
a workflow and the stuck-chord tracker, on literal events recorded from Celery 5.7.
"""

from __future__ import annotations

from exporter.events.canvas import chord_callback_name, chord_group_id
from exporter.history.merge import merge, record_from_event
from tests.support.clock import T0
from tests.support.events import task_event

GROUP = "a2b30845-60c6-4cee-8f0e-61cece5cb37f"
#: chord_unlock's args repr as a Celery 5.7 worker sent it (db+sqlite result backend).
UNLOCK_ARGS = (
    f"('{GROUP}', {{'task': 'tests.support.workflow_app.total', 'args': (), 'kwargs': {{}}, "
    "'options': {'task_id': '4037a48c-c49f-4a5e-8462-facf4bdf7728', 'reply_to': "
    f"'2160b8e8-3764-38cf-b07e-52e0b4178761', 'group_id': '{GROUP}'}}, 'subtask_type': None, "
    "'immutable': False})")
UNLOCK_KWARGS = ("{'interval': None, 'max_retries': None, 'result': [((...), None), ((...), "
                 "None), ((...), None)], '_chord_unlock_exchange_type': 'direct'}")


def test_chord_unlock_args_give_the_group_and_the_callback_name():
    assert chord_group_id("celery.chord_unlock", UNLOCK_ARGS) == GROUP
    assert chord_callback_name(UNLOCK_ARGS) == "tests.support.workflow_app.total"
    assert chord_group_id("app.add", "('x', 1)") is None
    assert chord_group_id("celery.chord_unlock", "(...)") is None
    assert chord_group_id("celery.chord_unlock", None) is None
    assert chord_callback_name("('x', 1)") is None


def test_history_keeps_the_group_a_chord_unlock_waits_for_and_no_other():
    unlock = [task_event(kind, uuid="u1", timestamp=T0 + i, name="celery.chord_unlock",
                         args=UNLOCK_ARGS, kwargs=UNLOCK_KWARGS, root_id="u1", parent_id=None)
              for i, kind in enumerate(("task-sent", "task-received"))]
    rows = [record_from_event(event) for event in unlock]
    assert [row[1].get("group_id") for row in rows if row] == [GROUP, GROUP]
    merged = merge(*(row[1] for row in rows if row))
    assert (merged["group_id"], merged["root_id"], merged.get("parent_id")) == (GROUP, "u1", None)
    header = record_from_event(task_event("task-sent", uuid="h1", timestamp=T0,
                                          name="app.add", args=f"('{GROUP}',)",
                                          root_id="r", parent_id="r"))
    assert header is not None and "group_id" not in header[1]
    assert (header[1]["root_id"], header[1]["parent_id"]) == ("r", "r")
