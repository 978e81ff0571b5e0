"""Workflows (issue 18): what the canvas leaves in events, the history's group id, the tree of
a workflow and the stuck-chord tracker, on literal events recorded from Celery 5.7.
"""

from __future__ import annotations

from exporter.events.canvas import chord_callback_name, chord_group_id
from exporter.events.parse import parse_eta
from exporter.events.table import EVENT_STATE, STATE_STAGE
from exporter.history.merge import merge, record_from_event
from exporter.history.workflow import WaitingStep, WorkflowNode, build_tree
from exporter.repair.findings import Finding
from exporter.state.workflows import StuckStep, WorkflowTracker
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


# -- the tracker ---------------------------------------------------------------------------------

def _feed(tracker: WorkflowTracker, events: list[dict], names: dict[str, str],
          states: dict[str, str] | None = None) -> None:
    """Observe ``events`` as the model would hand them over: each after the task's state
    moved on (stage order: a late task-sent leaves a started task started)."""
    states = {} if states is None else states
    for event in events:
        state, task_id = EVENT_STATE[event["type"]], event["uuid"]
        if STATE_STAGE[state] >= STATE_STAGE[states.get(task_id, "PENDING")]:
            states[task_id] = state
        tracker.observe(event["type"], event, names.get(task_id, ""), lambda n: n,
                        states.get)


def _ev(kind: str, uuid: str, at: float, **fields: object) -> dict:
    return task_event(kind, uuid=uuid, timestamp=at, local_received=at, **fields)


def _chord_held(callback_started: bool) -> list[dict]:
    """A chord at the top level on Redis: h1, h2 (own roots); h2 ends last at T0+3 and sends
    the callback cb (root h2, parent h2) at T0+2.9."""
    events = [
        _ev("task-sent", "h1", T0, root_id="h1", parent_id=None),
        _ev("task-sent", "h2", T0, root_id="h2", parent_id=None),
        _ev("task-started", "h1", T0 + 1), _ev("task-started", "h2", T0 + 1),
        _ev("task-succeeded", "h1", T0 + 2),
        _ev("task-sent", "cb", T0 + 2.9, root_id="h2", parent_id="h2"),
        _ev("task-succeeded", "h2", T0 + 3),
    ]
    if callback_started:
        events.append(_ev("task-started", "cb", T0 + 4))
    return events


NAMES = {"h1": "app.add", "h2": "app.add", "cb": "app.total", "u1": "celery.chord_unlock"}


def test_a_callback_held_behind_its_finished_header_is_stuck_after_the_bound():
    tracker = WorkflowTracker(stuck_after=10)
    _feed(tracker, _chord_held(callback_started=False), NAMES)
    quiet = tracker.snapshot(T0 + 13)  # waiting since h2 ended (T0+3): 10 s, not more
    assert (quiet.stuck, quiet.in_progress) == ({}, 1)
    loud = tracker.snapshot(T0 + 13.5)
    assert loud.stuck == {("app.total",): 1}
    assert loud.stuck_steps == (StuckStep("cb", "app.total", "h2", "h2", T0 + 3),)
    assert (loud.in_progress, loud.steps_in_memory) == (1, 2)  # h1, on its own, is not kept


def test_a_callback_that_started_is_not_stuck_and_the_workflow_ends_with_it():
    tracker = WorkflowTracker(stuck_after=10)
    _feed(tracker, _chord_held(callback_started=True), NAMES)
    assert (tracker.snapshot(T0 + 60).stuck, tracker.snapshot(T0 + 60).in_progress) == ({}, 1)
    _feed(tracker, [_ev("task-succeeded", "cb", T0 + 5)], NAMES)
    assert tracker.snapshot(T0 + 60).in_progress == 0


def test_a_step_waits_from_its_eta_and_not_while_its_parent_runs():
    tracker = WorkflowTracker(stuck_after=10)
    _feed(tracker, [
        _ev("task-sent", "p", T0, root_id="p"), _ev("task-started", "p", T0 + 1),
        _ev("task-sent", "c", T0 + 2, root_id="p", parent_id="p",
            eta="2026-01-01T00:00:00+00:00"),
    ], NAMES)
    assert tracker.snapshot(T0 + 100).stuck == {}  # p still runs
    _feed(tracker, [_ev("task-succeeded", "p", T0 + 3)], NAMES)
    eta = parse_eta("2026-01-01T00:00:00+00:00")
    assert eta is not None
    assert tracker.snapshot(max(T0 + 14, eta + 10)).stuck == {}
    assert tracker.snapshot(max(T0 + 14, eta + 10) + 1).stuck == {("unknown",): 1}


def test_events_in_any_order_give_the_same_answer():
    events = _chord_held(callback_started=True)
    for order in (events, events[::-1], events[3:] + events[:3]):
        tracker = WorkflowTracker(stuck_after=10)
        _feed(tracker, order, NAMES)
        snapshot = tracker.snapshot(T0 + 60)
        assert (snapshot.stuck, snapshot.in_progress, snapshot.steps_in_memory) == ({}, 1, 2)


def test_chord_unlock_retries_count_under_the_callback_name():
    tracker = WorkflowTracker(stuck_after=10)
    sent = dict(name="celery.chord_unlock", args=UNLOCK_ARGS, root_id="u1")
    _feed(tracker, [
        _ev("task-sent", "u1", T0, **sent), _ev("task-started", "u1", T0 + 1),
        _ev("task-retried", "u1", T0 + 1.1),
        _ev("task-sent", "u1", T0 + 1.1, parent_id="u1", **sent),
        _ev("task-started", "u1", T0 + 2.2), _ev("task-retried", "u1", T0 + 2.3),
    ], NAMES)
    snapshot = tracker.snapshot(T0 + 100)
    assert snapshot.chord_unlock_retries == {("tests.support.workflow_app.total",): 2}
    assert snapshot.stuck == {}  # its own parent: a retry is no predecessor


def test_memory_is_bounded_and_counts_follow_evictions():
    tracker = WorkflowTracker(stuck_after=10, max_steps=3)
    states: dict[str, str] = {}
    _feed(tracker, _chord_held(callback_started=False), NAMES, states)  # keeps cb, then h2
    _feed(tracker, [_ev("task-sent", "x1", T0 + 5, root_id="x0", parent_id="x0"),
                    _ev("task-sent", "x2", T0 + 6, root_id="x0", parent_id="x1")],
          {"x1": "app.x"}, states)
    snapshot = tracker.snapshot(T0 + 100)  # cb forgotten (least recently seen)
    assert (snapshot.steps_in_memory, snapshot.evictions, snapshot.in_progress) == (3, 1, 1)
    # x1 waits behind x0, which the model does not know: from its own send; x2 behind x1,
    # which has not started.
    assert snapshot.stuck == {("app.x",): 1}


# -- the tree ------------------------------------------------------------------------------------

def _node(task_id: str, parent: str | None, sent: float) -> WorkflowNode:
    return WorkflowNode(task_id=task_id, name="app.add", state="SUCCESS", parent_id=parent,
                        group_id=None, retries=0, sent_at=sent, started_at=None,
                        finished_at=None, runtime=None, state_ts=sent)


def _ids(nodes: list[WorkflowNode]) -> list:
    return [(n.task_id, _ids(n.children)) for n in nodes]


def test_the_tree_nests_by_parent_in_order_of_sending_whatever_the_row_order():
    rows = [_node("c2", "r", T0 + 2), _node("r", None, T0), _node("c1", "r", T0 + 1),
            _node("g", "c1", T0 + 3), _node("u", "u", T0 + 4), _node("orphan", "gone", T0 - 1),
            _node("cb", "u", T0 + 5)]
    assert _ids(build_tree("r", rows)) == [
        ("r", [("c1", [("g", [])]), ("c2", [])]), ("orphan", []), ("u", [("cb", [])])]


def test_a_chain_deeper_than_the_bound_continues_at_the_top_level():
    chain = [_node("t0", None, T0)] + [_node(f"t{i}", f"t{i - 1}", T0 + i) for i in range(1, 7)]
    top = build_tree("t0", chain, max_depth=3)
    assert _ids(top) == [("t0", [("t1", [("t2", [])])]), ("t3", [("t4", [("t5", [])])]),
                         ("t6", [])]
    assert [n.parent_id for n in top] == [None, "t2", "t5"]


# -- fed by the model ----------------------------------------------------------------------------

def test_a_callback_the_repairer_found_finished_is_not_stuck(make_model, clock):
    tracker = WorkflowTracker(stuck_after=10)
    model = make_model(workflows=tracker)
    model.process_many([
        task_event("task-sent", uuid="h", timestamp=T0, name="app.add", root_id="h"),
        task_event("task-started", uuid="h", timestamp=T0 + 1),
        task_event("task-sent", uuid="cb", timestamp=T0 + 2, name="app.total", root_id="h",
                   parent_id="h"),
        task_event("task-succeeded", uuid="h", timestamp=T0 + 2, runtime=1.0),
    ], received_at=T0 + 2)
    assert tracker.snapshot(T0 + 13).stuck == {("app.total",): 1}
    # The callback's own events were lost; the result backend says it succeeded.
    assert model.apply_repair(Finding("cb", "SUCCESS", "result_backend", T0 + 3)) is True
    snapshot = tracker.snapshot(T0 + 13)
    assert (snapshot.stuck, snapshot.in_progress) == ({}, 0)


def test_steps_warmed_from_the_history_still_count_as_stuck():
    tracker = WorkflowTracker(stuck_after=10)
    steps = [WaitingStep("cb", "app.total", "h", "h", T0 + 2.9, T0 + 2.9, None, "SUCCESS",
                         T0 + 3),
             WaitingStep("c2", "app.next", "r", "r", T0, T0, None, "STARTED", None),
             WaitingStep("o", "app.orphan", "x", "gone", T0, T0, None, None, None)]
    assert tracker.warm(steps, lambda name: name) == 3
    snapshot = tracker.snapshot(T0 + 13.5)
    assert snapshot.stuck == {("app.total",): 1, ("app.orphan",): 1}  # c2's parent runs
    assert (snapshot.in_progress, snapshot.steps_in_memory) == (2, 5)
    _feed(tracker, [_ev("task-started", "cb", T0 + 20)], NAMES)
    assert tracker.snapshot(T0 + 30).stuck == {("app.orphan",): 1}
    assert tracker.warm(steps, lambda name: name) == 0
