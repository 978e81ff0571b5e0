"""Repair of lost events (exporter.repair): what the sources say (recorded replies), how the model
applies it once, which tasks are checked when, and the repairer's rounds on fake sources."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

import pytest
from celery.exceptions import TaskRevokedError

from exporter.history.merge import record_from_event
from exporter.repair.findings import (
    Finding,
    finding_from_meta,
    findings_from_query,
    needs_workers,
)
from exporter.repair.repairer import Repairer
from exporter.repair.sources import SourceUnavailable
from exporter.repair.suspects import SuspectTable
from exporter.state.health import GapWindow, Health
from exporter.state.labels import ExceptionLabels, TaskLabels
from tests.support.clock import T0, FakeClock
from tests.support.events import WORKER

ADD = "app.add"
KEY = TaskLabels(ADD, "default")
#: A result backend's meta as Celery's Redis backend returns it with result_extended.
REDIS_META = {
    "status": "SUCCESS", "result": 3, "traceback": None, "children": [],
    "date_done": "2023-11-14T22:13:25.500000+00:00", "name": ADD, "args": [1, 2],
    "kwargs": {}, "worker": "celery@w2", "retries": 0, "queue": "a", "task_id": "t1",
}


class PaymentDeclined(Exception):
    pass


# -- what the sources say ---------------------------------------------------------------------


def test_a_stored_success_is_a_finding_with_date_done_and_the_extended_fields():
    assert finding_from_meta("t1", REDIS_META) == Finding(
        task_id="t1", state="SUCCESS", source="result_backend", timestamp=T0 + 5.5, name=ADD,
        hostname="celery@w2", queue="a", args="[1, 2]", kwargs="{}", retries=0, result="3")


def test_a_stored_failure_gives_the_exception_repr_and_traceback():
    meta = {"status": "FAILURE", "result": PaymentDeclined("card declined"),
            "traceback": "Traceback ...\nPaymentDeclined: card declined\n",
            "date_done": datetime(2023, 11, 14, 22, 13, 21)}  # database backend: naive UTC
    finding = finding_from_meta("t2", meta)
    assert finding is not None
    assert (finding.state, finding.timestamp, finding.exception, finding.name) == (
        "FAILURE", T0 + 1, "PaymentDeclined('card declined')", None)
    assert finding.traceback == "Traceback ...\nPaymentDeclined: card declined\n"


@pytest.mark.parametrize("status", ["PENDING", "STARTED", "RETRY", "RECEIVED", None])
def test_a_backend_state_that_is_not_an_end_is_no_finding(status):
    assert finding_from_meta("t1", {"status": status, "result": None}) is None


def test_a_revoked_result_and_an_unparseable_date_done():
    finding = finding_from_meta("t1", {"status": "REVOKED", "result": None,
                                       "date_done": "yesterday"})
    assert finding is not None and (finding.state, finding.timestamp) == ("REVOKED", None)


@pytest.mark.parametrize(("result", "reason", "needs"), [
    (TaskRevokedError("revoked"), "revoked", True),  # also Celery 5.7's acknowledgement
    (TaskRevokedError("terminated"), "terminated", False),
    (TaskRevokedError("expired"), "expired", False),
    (None, None, True),
])
def test_a_revoked_result_says_why_and_whether_the_workers_must_confirm_it(result, reason,
                                                                            needs):
    finding = finding_from_meta("t1", {"status": "REVOKED", "result": result,
                                       "date_done": "2023-11-14T22:13:21+00:00"})
    assert finding is not None and (finding.state, finding.revoke_reason) == ("REVOKED", reason)
    assert needs_workers(finding) is needs


def test_only_a_revoked_result_needs_the_workers():
    for meta in (REDIS_META, {"status": "FAILURE", "result": PaymentDeclined("x")}):
        finding = finding_from_meta("t1", meta)
        assert finding is not None and not needs_workers(finding)


def test_query_task_replies_give_running_and_held_tasks():
    replies = {
        "celery@w1": {"t1": ["active", {"id": "t1", "name": ADD, "args": [1, 2], "kwargs": {},
                                        "hostname": "celery@w1", "time_start": T0 + 2.0,
                                        "delivery_info": {"routing_key": "a"}}],
                      "t9": ["active", {"id": "t9"}]},  # not asked for
        "celery@w2": {"t2": ["reserved", {"id": "t2", "name": ADD, "time_start": None}],
                      "t3": ["ready", {"id": "t3"}], "t4": "garbage"},
        "celery@w3": "not a mapping",
    }
    found = findings_from_query(replies, ["t1", "t2", "t3", "t4"])
    assert found == {
        "t1": Finding("t1", "STARTED", "workers", T0 + 2.0, name=ADD, hostname="celery@w1",
                      queue="a", args="[1, 2]", kwargs="{}"),
        "t2": Finding("t2", "RECEIVED", "workers", None, name=ADD, hostname="celery@w2"),
    }


# -- the model applies a finding once --------------------------------------------------------


def _model(make_model):
    records: list[dict] = []
    return make_model(history=records.append), records


def test_a_repair_of_a_task_whose_events_are_held_applies_them_first(make_model, ev):
    model, _ = _model(make_model)
    model.process_many([ev.sent("t0", T0, ADD), ev.received("t1", T0, ADD)])
    assert model.task_states(["t1"]) == {}  # held: its task-sent may still come
    assert model.apply_repair(Finding("t1", "SUCCESS", "result_backend", T0 + 2)) is True
    snap = model.snapshot()
    unknown = TaskLabels(ADD, "unknown")
    assert (snap.lifecycle["task-received"][unknown], snap.lifecycle["task-started"][unknown],
            snap.lifecycle["task-succeeded"][unknown]) == (1, 1, 1)
    assert model.task_states(["t1"]) == {"t1": "SUCCESS"}


def test_a_task_seen_sent_and_repaired_from_the_backend_counts_its_whole_lifecycle(
        make_model, ev, clock):
    model, history = _model(make_model)
    model.process_many([ev.sent("t1", T0, ADD)])
    clock.advance(10)
    finding = Finding("t1", "SUCCESS", "result_backend", T0 + 5, name=ADD, hostname="celery@w2",
                      result="3")
    assert model.apply_repair(finding) is True
    snap = model.snapshot()
    for event_type in ("task-sent", "task-received", "task-started", "task-succeeded"):
        assert snap.lifecycle[event_type][KEY] == 1, event_type
    assert snap.lifecycle["task-failed"][KEY] == 0
    assert snap.running.get(KEY, 0) == 0
    assert model.task_summary("t1") == ("SUCCESS", ADD, "default")
    assert history[-1] == {"type": "task-succeeded", "uuid": "t1", "timestamp": T0 + 5,
                           "local_received": T0 + 10, "state_source": "result_backend",
                           "name": ADD, "hostname": "celery@w2", "result": "3"}


def test_a_running_task_repaired_as_failed_leaves_running_and_counts_its_exception(
        make_model, ev):
    model, _ = _model(make_model)
    model.process_many([ev.sent("t1", T0, ADD), ev.received("t1", T0 + 1, ADD),
                        ev.started("t1", T0 + 2)])
    assert model.snapshot().running[KEY] == 1
    assert model.apply_repair(Finding("t1", "FAILURE", "result_backend", T0 + 3,
                                      exception="KeyError('x')")) is True
    snap = model.snapshot()
    assert [snap.lifecycle[t][KEY] for t in ("task-received", "task-started", "task-failed")] \
        == [1, 1, 1]
    assert snap.running[KEY] == 0
    assert snap.exceptions == {ExceptionLabels(ADD, "KeyError"): 1}


def test_late_real_events_after_a_repair_are_not_counted_again_but_reach_the_history(
        make_model, ev):
    model, history = _model(make_model)
    model.process_many([ev.sent("t1", T0, ADD)])
    model.apply_repair(Finding("t1", "SUCCESS", "result_backend", T0 + 5))
    late = [ev.received("t1", T0 + 1, ADD), ev.started("t1", T0 + 2),
            ev.succeeded("t1", T0 + 5.25, 3.0)]
    model.process_many(late)
    snap = model.snapshot()
    for event_type in ("task-received", "task-started", "task-succeeded"):
        assert snap.lifecycle[event_type][KEY] == 1, event_type
    # The late end is a second report of an end (duplicate); the others were counted by the
    # repair when they were lost.
    assert snap.events_malformed == {"repaired": 2, "duplicate": 1}
    assert [record["type"] for record in history[-2:]] == ["task-received", "task-started"]


def test_a_repair_after_the_real_end_changes_nothing(make_model, ev):
    model, history = _model(make_model)
    model.process_many(ev.success("t1", T0, ADD))
    before = model.snapshot().lifecycle
    assert model.apply_repair(Finding("t1", "FAILURE", "result_backend", T0 + 9)) is False
    assert model.snapshot().lifecycle == before
    assert model.apply_repair(Finding("unknown", "SUCCESS", "result_backend", T0)) is False
    assert len(history) == 4


def test_a_task_a_worker_runs_counts_as_running_once_and_ends_with_its_real_event(
        make_model, ev):
    model, _ = _model(make_model)
    model.process_many([ev.sent("t1", T0, ADD)])
    assert model.apply_repair(Finding("t1", "STARTED", "workers", T0 + 2,
                                      hostname="celery@w2")) is True
    assert model.apply_repair(Finding("t1", "STARTED", "workers", T0 + 2)) is False
    assert model.apply_repair(Finding("t1", "RECEIVED", "workers", None)) is False
    snap = model.snapshot()
    assert (snap.running[KEY], snap.lifecycle["task-started"][KEY]) == (1, 1)
    model.process_many([ev.started("t1", T0 + 2.0625, "celery@w2"),
                        ev.succeeded("t1", T0 + 3, 0.9, "celery@w2")])
    snap = model.snapshot()
    assert (snap.running[KEY], snap.lifecycle["task-started"][KEY],
            snap.lifecycle["task-succeeded"][KEY]) == (0, 1, 1)
    # Run time from the start the worker reported (time_start) to the real end.
    assert snap.runtime[KEY.with_state("SUCCESS")].count == 1


def test_a_worker_confirming_what_the_events_said_is_no_repair(make_model, ev):
    model, history = _model(make_model)
    model.process_many([ev.sent("t1", T0, ADD), ev.started("t1", T0 + 2)])
    # time_start is a little later than the task-started timestamp: the same state still.
    assert model.apply_repair(Finding("t1", "STARTED", "workers", T0 + 2.0625)) is False
    assert len(history) == 2


def test_after_a_retry_the_next_attempt_counts_again(make_model, ev):
    model, _ = _model(make_model)
    model.process_many([ev.sent("t1", T0, ADD)])
    model.apply_repair(Finding("t1", "STARTED", "workers", T0 + 2))
    model.process_many([ev.retried("t1", T0 + 3), ev.received("t1", T0 + 4, ADD, retries=1),
                        ev.started("t1", T0 + 5)])
    snap = model.snapshot()
    assert (snap.lifecycle["task-received"][KEY], snap.lifecycle["task-started"][KEY]) == (2, 2)
    assert snap.running[KEY] == 1


def test_a_warmed_task_gets_name_and_queue_from_an_extended_result(make_model, ev):
    model, _ = _model(make_model)
    model.process_many([ev.started("t1", T0 + 2)])  # no task-sent/received seen: unknown
    model.apply_repair(Finding("t1", "SUCCESS", "result_backend", T0 + 3, name=ADD, queue="a"))
    # Its end counts under the name and queue the result backend stored (result_extended);
    # the running gauge it joined as unknown/unknown is left under those labels.
    snap = model.snapshot()
    assert snap.lifecycle["task-succeeded"][TaskLabels(ADD, "a")] == 1
    assert snap.running[TaskLabels("unknown", "unknown")] == 0


def test_the_tasks_in_progress_and_the_workers_with_missed_events(make_model, ev):
    model, _ = _model(make_model)
    model.process_many([ev.sent("t1", T0, ADD), ev.sent("t2", T0, ADD), ev.sent("t3", T0, ADD),
                        ev.received("t2", T0, ADD),
                        ev.received("t3", T0, ADD, hostname="celery@w2"),
                        *ev.success("t4", T0, ADD)])
    assert sorted(model.in_progress()) == ["t1", "t2", "t3"]
    assert sorted(model.in_progress([WORKER, None])) == ["t1", "t2"]
    assert model.task_states(["t1", "t4", "nope"]) == {"t1": "PENDING", "t4": "SUCCESS"}
    model.process_many([ev.heartbeat(WORKER, T0 + 1, processed=10),
                        ev.heartbeat(WORKER, T0 + 3, processed=12),
                        ev.heartbeat(WORKER, T0 + 5, processed=12)])
    assert model.take_missed_workers() == {WORKER}
    assert model.take_missed_workers() == set()


# -- gaps are kept with their window ---------------------------------------------------------


def test_a_gap_window_runs_from_the_last_batch_to_the_reconnect():
    clock = FakeClock()
    health = Health(clock=clock)
    health.set_broker_connected(True)
    clock.advance(1)
    health.record_batch(0.01)
    clock.advance(30)  # frozen: nothing arrives, then the loss is noticed
    health.set_broker_connected(False)
    assert health.gap_windows() == () and not health.gap_closed.is_set()
    clock.advance(2)
    health.set_broker_connected(True, reconnected=True)
    assert health.gap_windows() == (GapWindow(1, T0 + 1, T0 + 33),)
    assert health.gap_closed.is_set()
    health.set_broker_connected(False)  # nothing arrived on this connection: from its start
    clock.advance(1)
    health.set_broker_connected(True, reconnected=True)
    assert health.gap_windows()[-1] == GapWindow(2, T0 + 33, T0 + 34)


# -- which tasks are checked when --------------------------------------------------------------


def test_suspects_are_due_oldest_first_and_back_off_until_given_up():
    table = SuspectTable(capacity=3, retry_base=10, retry_max=25, max_attempts=3)
    assert table.add(["a", "b"], "gap", due=5) == 2
    assert table.add(["c", "d"], "restart", due=1) == 1  # capacity 3: d refused
    assert table.due(now=5, limit=2) == ["c", "a"]
    table.inconclusive("a", now=5, unresolved=True)
    assert table.get("a").due == 15
    table.inconclusive("a", now=15, unresolved=True)
    assert table.get("a").due == 35
    table.inconclusive("a", now=35, unresolved=True)  # given up, still unresolved
    assert (table.get("a").due, table.unresolved(), table.pending()) == (math.inf, 1, 2)
    for _ in range(3):
        table.inconclusive("c", now=5, unresolved=False)  # waiting in its queue: it leaves
    assert "c" not in table
    table.add(["a"], "gap", due=40)  # a new gap: checked again
    assert (table.get("a").due, table.get("a").attempts) == (40, 0)


# -- rounds ------------------------------------------------------------------------------------


class FakeBackend:
    name = "result_backend"

    def __init__(self, outcomes: dict[str, Finding] | None = None) -> None:
        self.outcomes = outcomes or {}
        self.down = False
        self.asked: list[str] = []

    def outcome(self, task_id: str) -> Finding | None:
        if self.down:
            raise SourceUnavailable("connection refused")
        self.asked.append(task_id)
        return self.outcomes.get(task_id)


class FakeWorkers:
    name = "workers"

    def __init__(self, held: dict[str, Finding] | None = None) -> None:
        self.held_tasks = held or {}
        self.down = False
        self.calls: list[list[str]] = []

    def held(self, task_ids: Sequence[str], workers: int) -> dict[str, Finding]:
        if self.down:
            raise SourceUnavailable("broker down")
        self.calls.append(list(task_ids))
        return {i: f for i, f in self.held_tasks.items() if i in task_ids}


def _gap(health: Health, clock: FakeClock) -> None:
    health.set_broker_connected(True)
    health.set_broker_connected(False)
    clock.advance(1)
    health.set_broker_connected(True, reconnected=True)


def test_after_a_gap_the_backend_settles_what_the_events_missed(make_model, ev, clock):
    model, history = _model(make_model)
    health = Health(clock=clock)
    model.process_many([ev.sent("t1", T0, ADD), ev.sent("t2", T0, ADD),
                        ev.sent("t3", T0, ADD), ev.sent("t4", T0, ADD),
                        ev.received("t4", T0, ADD)])
    backend = FakeBackend({
        "t1": Finding("t1", "SUCCESS", "result_backend", T0 + 2),
        "t2": Finding("t2", "FAILURE", "result_backend", T0 + 2, exception="ValueError('x')")})
    workers = FakeWorkers({"t3": Finding("t3", "STARTED", "workers", T0 + 1)})
    repairer = Repairer(model, health, backend=backend, workers=workers, interval=5,
                        batch=100, clock=clock)
    assert health.snapshot().repairs == {(s, "result_backend"): 0 for s in
                                         ("FAILURE", "REVOKED", "SUCCESS")} | {
        ("RECEIVED", "workers"): 0, ("STARTED", "workers"): 0}
    _gap(health, clock)
    assert repairer.run_round().checked == 0  # suspects wait one interval
    assert health.snapshot().repair_pending == 4
    clock.advance(5)
    report = repairer.run_round()
    assert (report.checked, report.applied, report.inconclusive) == (4, 3, 1)
    assert workers.calls == [["t3", "t4"]]  # the backend settled t1 and t2
    snap = model.snapshot()
    assert (snap.lifecycle["task-succeeded"][KEY], snap.lifecycle["task-failed"][KEY],
            snap.running[KEY]) == (1, 1, 1)
    health_snap = health.snapshot()
    assert {k: v for k, v in health_snap.repairs.items() if v} == {
        ("SUCCESS", "result_backend"): 1, ("FAILURE", "result_backend"): 1,
        ("STARTED", "workers"): 1}
    # t4: a worker received it, none holds it, no outcome stored: unresolved.
    assert (health_snap.repair_pending, health_snap.repair_unresolved) == (1, 1)
    model.process_many([ev.started("t4", T0 + 9), ev.succeeded("t4", T0 + 10, 1.0)])
    repairer.run_round()
    assert (health.snapshot().repair_pending, health.snapshot().repair_unresolved) == (0, 0)
    assert [r.get("state_source") for r in history if "state_source" in r] == [
        "result_backend", "result_backend", "workers"]


def test_a_source_that_is_down_is_counted_backed_off_and_loses_no_attempt(
        make_model, ev, clock):
    model, _ = _model(make_model)
    health = Health(clock=clock)
    model.process_many([ev.sent("t1", T0, ADD)])
    backend = FakeBackend({"t1": Finding("t1", "SUCCESS", "result_backend", T0 + 2)})
    backend.down = True
    repairer = Repairer(model, health, backend=backend, workers=FakeWorkers(), interval=5,
                        batch=100, clock=clock)
    repairer.suspect(["t1"], "restart")
    repairer.run_round()
    clock.advance(5)
    assert repairer.run_round().deferred == 1
    clock.advance(5)  # backing off: 5 s after the first failure, then 10 s
    assert repairer.run_round().deferred == 1
    assert health.snapshot().repair_errors == {"result_backend": 2, "workers": 0}
    backend.down = False
    clock.advance(5)
    assert repairer.run_round().deferred == 1  # still backing off (10 s)
    clock.advance(5)
    assert repairer.run_round().applied == 1
    assert repairer.table.get("t1") is None


def test_without_a_result_backend_a_task_nobody_holds_is_unresolved(make_model, ev, clock):
    model, _ = _model(make_model)
    health = Health(clock=clock)
    model.process_many([ev.sent("t1", T0, ADD)])
    repairer = Repairer(model, health, backend=None, workers=FakeWorkers(), interval=5,
                        batch=100, clock=clock)
    repairer.suspect(["t1"], "restart")
    repairer.run_round()
    clock.advance(5)
    assert repairer.run_round().inconclusive == 1
    assert health.snapshot().repair_unresolved == 1
    assert model.snapshot().lifecycle["task-succeeded"][KEY] == 0


def test_with_a_result_backend_a_task_still_waiting_is_not_unresolved(make_model, ev, clock):
    model, _ = _model(make_model)
    health = Health(clock=clock)
    model.process_many([ev.sent("t1", T0, ADD)])
    repairer = Repairer(model, health, backend=FakeBackend(), workers=FakeWorkers(),
                        interval=5, batch=100, clock=clock)
    repairer.suspect(["t1"], "restart")
    for _ in range(7):
        clock.advance(300)
        repairer.run_round()
    assert (health.snapshot().repair_unresolved, len(repairer.table)) == (0, 0)


def test_missed_events_make_that_workers_tasks_suspects(make_model, ev, clock):
    model, _ = _model(make_model)
    health = Health(clock=clock)
    model.process_many([ev.sent("t1", T0, ADD), ev.received("t2", T0, ADD, "celery@w2"),
                        ev.heartbeat(WORKER, T0, processed=1),
                        ev.heartbeat(WORKER, T0 + 2, processed=2),
                        ev.heartbeat(WORKER, T0 + 4, processed=2)])
    backend = FakeBackend()
    repairer = Repairer(model, health, backend=backend, workers=FakeWorkers(), interval=5,
                        batch=1, clock=clock)
    repairer.run_round()
    clock.advance(5)
    repairer.run_round()
    assert backend.asked == ["t1"]  # t2 is on another worker; one per round (batch=1)


# -- REVOKED in the result backend: an end, or only a worker's acknowledgement ---------------

#: What Celery 5.7 stores when a worker acknowledges a revoke of a task it is not running.
ACKNOWLEDGED = Finding("t1", "REVOKED", "result_backend", T0 + 3,
                       exception="TaskRevokedError('revoked')", revoke_reason="revoked")


def _revoked_round(model, clock, backend: FakeBackend, workers: FakeWorkers
                   ) -> tuple[Health, Repairer]:
    health = Health(clock=clock)
    repairer = Repairer(model, health, backend=backend, workers=workers, interval=5,
                        batch=100, clock=clock)
    repairer.suspect(["t1"], "restart")
    repairer.run_round()
    clock.advance(5)
    repairer.run_round()
    return health, repairer


def test_a_waiting_task_revoked_in_the_backend_is_revoked_once_and_its_late_event_not_again(
        make_model, ev, clock):
    # The revoke was acknowledged and no worker runs the task: whoever gets it discards it.
    model, history = _model(make_model)
    model.process_many([ev.sent("t1", T0, ADD)])
    workers = FakeWorkers()
    health, _ = _revoked_round(model, clock, FakeBackend({"t1": ACKNOWLEDGED}), workers)
    assert workers.calls == [["t1"]]  # asked whether a worker runs it
    assert model.task_states(["t1"]) == {"t1": "REVOKED"}
    assert health.snapshot().repairs[("REVOKED", "result_backend")] == 1
    assert model.snapshot().lifecycle["task-revoked"][KEY] == 1
    assert history[-1]["type"] == "task-revoked"
    assert history[-1]["state_source"] == "result_backend"
    # The worker discards the message when it comes: its task-revoked is no second revoke.
    model.process_many([ev.revoked("t1", T0 + 8)])
    snap = model.snapshot()
    assert snap.lifecycle["task-revoked"][KEY] == 1
    assert snap.events_malformed == {"repaired": 1}
    assert history[-1]["type"] == "task-revoked" and "state_source" not in history[-1]


def test_a_revoke_acknowledged_while_another_worker_runs_the_task_is_not_its_end(
        make_model, ev, clock):
    # A revoke without terminate: one worker runs t1 on, another acknowledged the revoke and
    # Celery 5.7 stored REVOKED meanwhile (before the fix, repaired as REVOKED and counted in
    # celery_task_revoked_total, then counted again as succeeded when it finished).
    model, _ = _model(make_model)
    model.process_many([ev.sent("t1", T0, ADD), ev.received("t1", T0 + 1, ADD)])
    workers = FakeWorkers({"t1": Finding("t1", "STARTED", "workers", T0 + 2)})
    health, _ = _revoked_round(model, clock, FakeBackend({"t1": ACKNOWLEDGED}), workers)
    assert model.task_states(["t1"]) == {"t1": "STARTED"}
    assert {k: v for k, v in health.snapshot().repairs.items() if v} == {
        ("STARTED", "workers"): 1}
    model.process_many([ev.succeeded("t1", T0 + 9, 7.0)])
    snap = model.snapshot()
    assert KEY not in snap.lifecycle.get("task-revoked", {})
    assert (snap.lifecycle["task-started"][KEY], snap.lifecycle["task-succeeded"][KEY]) == (1, 1)


def test_a_task_held_by_a_worker_and_revoked_is_revoked(make_model, ev, clock):
    # Reserved (prefetched or waiting for its ETA): the worker holding it discards it.
    model, _ = _model(make_model)
    model.process_many([ev.sent("t1", T0, ADD), ev.received("t1", T0 + 1, ADD)])
    workers = FakeWorkers({"t1": Finding("t1", "RECEIVED", "workers", None)})
    _revoked_round(model, clock, FakeBackend({"t1": ACKNOWLEDGED}), workers)
    assert model.task_states(["t1"]) == {"t1": "REVOKED"}


def test_a_terminated_task_is_revoked_without_asking_the_workers(make_model, ev, clock):
    model, history = _model(make_model)
    model.process_many([ev.sent("t1", T0, ADD), ev.started("t1", T0 + 1)])
    terminated = Finding("t1", "REVOKED", "result_backend", T0 + 3, revoke_reason="terminated")
    workers = FakeWorkers({"t1": Finding("t1", "STARTED", "workers", T0 + 1)})
    _revoked_round(model, clock, FakeBackend({"t1": terminated}), workers)
    assert workers.calls == []
    assert model.task_states(["t1"]) == {"t1": "REVOKED"}
    # The history row's revoke_reason says terminated, as a task-revoked would (before: the
    # repair record carried no flag, so the row read "revoked").
    assert record_from_event(history[-1])[1]["revoke_reason"] == "terminated"


def test_an_acknowledged_revoke_waits_while_the_workers_cannot_be_asked(make_model, ev, clock):
    model, _ = _model(make_model)
    model.process_many([ev.sent("t1", T0, ADD)])
    workers = FakeWorkers()
    workers.down = True
    health, repairer = _revoked_round(model, clock, FakeBackend({"t1": ACKNOWLEDGED}), workers)
    assert model.task_states(["t1"]) == {"t1": "PENDING"}
    assert (health.snapshot().repair_errors["workers"], health.snapshot().repair_pending) == (1, 1)
    workers.down = False
    clock.advance(5)
    assert repairer.run_round().applied == 1
    assert model.task_states(["t1"]) == {"t1": "REVOKED"}
