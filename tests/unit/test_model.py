"""Replay scripted Celery event sequences through the model and check the exact snapshot."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

import pytest

from exporter.state.histogram import HistogramValue
from exporter.state.model import Model, ModelSnapshot
from exporter.state.task_series import LIFECYCLE_TYPES
from exporter.state.workers import OFFSET_SAMPLES, WorkerState

T0 = 1_700_000_000.0
WORKER = "celery@w1"
ADD = ("app.add", "default")
UNKNOWN = ("unknown", "unknown")
RUNTIME = (0.5, 1.0, 5.0)
WAIT = (0.1, 1.0, 10.0)


def lifecycle(snap: ModelSnapshot, **nonempty: dict) -> dict[str, dict]:
    """The expected ``snap.lifecycle``: every type empty unless given (``task_sent=...``);
    ``task_retried`` and ``task_cancelled`` by default 0 wherever ``task_succeeded`` is given
    (they exist from a pair's first sighting).
    """
    nonempty.setdefault("task_retried", dict.fromkeys(nonempty.get("task_succeeded", {}), 0))
    nonempty.setdefault("task_cancelled", dict.fromkeys(nonempty.get("task_succeeded", {}), 0))
    return {t: nonempty.get(t.replace("-", "_"), {}) for t in LIFECYCLE_TYPES}


def observed(table):
    """The histograms with at least one observation (zeros exist from a pair's first sighting)."""
    return {labels: h for labels, h in table.items() if h.count}


def hist(bounds: tuple[float, ...], cumulative: tuple[int, ...], total: float) -> HistogramValue:
    return HistogramValue(bounds, cumulative, total)


def state(model: Model, uuid: str) -> str:
    record = model.index.get(uuid)
    assert record is not None
    return record.state


# -- lifecycle counters -----------------------------------------------------------------------


def test_successful_task_counts_each_lifecycle_step_once(model, ev) -> None:
    model.process_many(ev.success("u1", T0, "app.add"))
    snap = model.snapshot()
    assert snap.lifecycle == lifecycle(
        snap, task_sent={ADD: 1}, task_received={ADD: 1}, task_started={ADD: 1},
        task_succeeded={ADD: 1}, task_failed={ADD: 0},
    )
    assert snap.exceptions == {}
    assert snap.running == {ADD: 0}
    assert state(model, "u1") == "SUCCESS"


def test_succeeded_and_failed_exist_at_zero_from_first_sighting(model, ev) -> None:
    model.process_many([ev.sent("u1", T0, "app.add")])
    snap = model.snapshot()
    assert snap.lifecycle == lifecycle(
        snap, task_sent={ADD: 1}, task_succeeded={ADD: 0}, task_failed={ADD: 0},
    )


def test_first_failure_is_visible_to_increase(model, ev) -> None:
    model.process_many([ev.sent("u1", T0, "app.add")])
    before = model.snapshot().lifecycle["task-failed"]
    model.process_many([ev.received("u1", T0 + 1, "app.add"), ev.started("u1", T0 + 2),
                        ev.failed("u1", T0 + 3)])
    after = model.snapshot().lifecycle["task-failed"]
    assert before == {ADD: 0}
    assert after == {ADD: 1}


def test_zero_series_are_created_once_per_name_and_queue(model, ev) -> None:
    model.process_many([
        ev.sent("u1", T0, "app.add", "a"), ev.sent("u2", T0, "app.add", "b"),
        ev.sent("u3", T0, "app.mul", "a"), ev.sent("u4", T0, "app.add", "a"),
    ])
    snap = model.snapshot()
    zeros = {("app.add", "a"): 0, ("app.add", "b"): 0, ("app.mul", "a"): 0}
    assert snap.lifecycle["task-sent"] == {("app.add", "a"): 2, ("app.add", "b"): 1,
                                           ("app.mul", "a"): 1}
    assert snap.lifecycle["task-succeeded"] == zeros
    assert snap.lifecycle["task-failed"] == zeros


def test_failures_count_by_exception_class(model, ev) -> None:
    model.process_many([
        *ev.failure("u1", T0, "app.pay", exception="ValueError('bad amount')"),
        *ev.failure("u2", T0, "app.pay", exception="billing.errors.CardDeclined('x')"),
        *ev.failure("u3", T0, "app.pay", exception="ValueError('again')"),
        *ev.failure("u4", T0, "app.pay", exception="<garbage"),
    ])
    snap = model.snapshot()
    assert snap.exceptions == {
        ("app.pay", "ValueError"): 2,
        ("app.pay", "billing.errors.CardDeclined"): 1,
        ("app.pay", "unknown"): 1,
    }
    assert snap.lifecycle["task-failed"] == {("app.pay", "default"): 4}


def test_revoked_rejected_and_cancelled_have_counters(model, ev) -> None:
    # Before: task-cancelled (a worker's cold shutdown killed the task) had no counter, so
    # started = succeeded + failed + ... + lost did not add up.
    model.process_many([
        ev.sent("u1", T0, "app.add"), ev.revoked("u1", T0 + 1),
        ev.sent("u2", T0, "app.add"), ev.received("u2", T0 + 1, "app.add"),
        ev.rejected("u2", T0 + 2),
        ev.sent("u3", T0, "app.add"), ev.received("u3", T0 + 1, "app.add"),
        ev.started("u3", T0 + 2), ev.cancelled("u3", T0 + 3),
    ])
    snap = model.snapshot()
    assert snap.lifecycle == lifecycle(
        snap, task_sent={ADD: 3}, task_received={ADD: 2}, task_started={ADD: 1},
        task_succeeded={ADD: 0}, task_failed={ADD: 0}, task_revoked={ADD: 1},
        task_rejected={ADD: 1}, task_cancelled={ADD: 1},
    )
    assert snap.running == {ADD: 0}
    assert [state(model, u) for u in ("u1", "u2", "u3")] == ["REVOKED", "REJECTED", "CANCELLED"]


# -- runtime and queue wait -------------------------------------------------------------------


def test_success_runtime_is_the_event_runtime_field(model, ev) -> None:
    # The succeeded timestamp is 10 s after started; the worker's measured runtime wins.
    model.process_many([ev.sent("u1", T0, "app.add"), ev.received("u1", T0, "app.add"),
                        ev.started("u1", T0), ev.succeeded("u1", T0 + 10, runtime=0.75)])
    assert observed(model.snapshot().runtime) == \
        {(*ADD, "SUCCESS"): hist(RUNTIME, (0, 1, 1, 1), 0.75)}


def test_failure_runtime_is_failed_minus_started_timestamp(model, ev) -> None:
    model.process_many([ev.sent("u1", T0, "app.add"), ev.received("u1", T0 + 1, "app.add"),
                        ev.started("u1", T0 + 2), ev.failed("u1", T0 + 5)])
    assert observed(model.snapshot().runtime) == \
        {(*ADD, "FAILURE"): hist(RUNTIME, (0, 0, 1, 1), 3.0)}


def test_runtime_above_every_bound_lands_only_in_inf(model, ev) -> None:
    model.process_many(ev.success("u1", T0, "app.add", runtime=7.5))
    assert observed(model.snapshot().runtime) == \
        {(*ADD, "SUCCESS"): hist(RUNTIME, (0, 0, 0, 1), 7.5)}


def test_runtime_equal_to_a_bound_counts_in_that_bucket(model, ev) -> None:
    model.process_many(ev.success("u1", T0, "app.add", runtime=0.5))
    assert observed(model.snapshot().runtime) == \
        {(*ADD, "SUCCESS"): hist(RUNTIME, (1, 1, 1, 1), 0.5)}


def test_successes_and_failures_have_separate_runtime_series(model, ev) -> None:
    model.process_many([*ev.success("u1", T0, "app.add", runtime=0.25),
                        *ev.success("u2", T0, "app.add", runtime=2.0),
                        *ev.failure("u3", T0, "app.add", runtime=0.75)])
    assert observed(model.snapshot().runtime) == {
        (*ADD, "SUCCESS"): hist(RUNTIME, (1, 1, 2, 2), 2.25),
        (*ADD, "FAILURE"): hist(RUNTIME, (0, 1, 1, 1), 0.75),
    }


def test_failure_without_started_observes_no_runtime(model, ev) -> None:
    model.process_many([ev.sent("u1", T0, "app.add"), ev.failed("u1", T0 + 5)])
    snap = model.snapshot()
    assert observed(snap.runtime) == {}
    assert snap.lifecycle["task-failed"] == {ADD: 1}


def test_queue_wait_is_started_minus_sent(model, ev) -> None:
    model.process_many([ev.sent("u1", T0, "app.add"), ev.received("u1", T0 + 0.25, "app.add"),
                        ev.started("u1", T0 + 0.5)])
    assert observed(model.snapshot().queue_wait) == {ADD: hist(WAIT, (0, 1, 1, 1), 0.5)}


def test_queue_wait_starts_at_the_eta_when_later_than_sent(model, ev) -> None:
    eta = ev.iso(T0 + 60)
    model.process_many([ev.sent("u1", T0, "app.add", eta=eta),
                        ev.received("u1", T0 + 0.25, "app.add", eta=eta),
                        ev.started("u1", T0 + 62.5)])
    assert observed(model.snapshot().queue_wait) == {ADD: hist(WAIT, (0, 0, 1, 1), 2.5)}


def test_queue_wait_ignores_an_eta_earlier_than_sent(model, ev) -> None:
    model.process_many([ev.sent("u1", T0, "app.add", eta=ev.iso(T0 - 60)),
                        ev.started("u1", T0 + 0.0625)])
    assert observed(model.snapshot().queue_wait) == {ADD: hist(WAIT, (1, 1, 1, 1), 0.0625)}


def test_queue_wait_is_clamped_at_zero_when_started_before_the_eta(model, ev) -> None:
    model.process_many([ev.sent("u1", T0, "app.add", eta=ev.iso(T0 + 60)),
                        ev.started("u1", T0 + 30)])
    assert observed(model.snapshot().queue_wait) == {ADD: hist(WAIT, (1, 1, 1, 1), 0.0)}


def test_queue_wait_is_clamped_at_zero_under_clock_skew(model, ev) -> None:
    model.process_many([ev.sent("u1", T0, "app.add"), ev.started("u1", T0 - 2)])
    assert observed(model.snapshot().queue_wait) == {ADD: hist(WAIT, (1, 1, 1, 1), 0.0)}


def test_queue_wait_falls_back_to_received_without_task_sent(model, ev) -> None:
    model.set_worker_queues({WORKER: ["default"]})
    model.process_many([ev.received("u1", T0, "app.add"), ev.started("u1", T0 + 0.5)])
    assert observed(model.snapshot().queue_wait) == {ADD: hist(WAIT, (0, 1, 1, 1), 0.5)}


def test_queue_wait_from_received_uses_the_eta_it_carries(model, ev) -> None:
    model.set_worker_queues({WORKER: ["default"]})
    model.process_many([ev.received("u1", T0, "app.add", eta=ev.iso(T0 + 10)),
                        ev.started("u1", T0 + 10.75)])
    assert observed(model.snapshot().queue_wait) == {ADD: hist(WAIT, (0, 1, 1, 1), 0.75)}


def test_started_without_sent_or_received_observes_no_queue_wait(model, ev) -> None:
    model.process_many([ev.started("u1", T0)])
    assert observed(model.snapshot().queue_wait) == {}


# -- running gauge ----------------------------------------------------------------------------


@pytest.mark.parametrize("terminal", ["succeeded", "failed", "retried", "revoked", "rejected",
                                      "cancelled"])
def test_running_goes_up_on_started_and_down_on_terminal_event(model, ev, terminal) -> None:
    model.process_many([ev.sent("u1", T0, "app.add"), ev.received("u1", T0 + 1, "app.add"),
                        ev.started("u1", T0 + 2)])
    during = model.snapshot().running
    end = getattr(ev, terminal)
    model.process_many([end("u1", T0 + 3, runtime=1.0) if terminal == "succeeded"
                        else end("u1", T0 + 3)])
    assert during == {ADD: 1}
    assert model.snapshot().running == {ADD: 0}


def test_running_counts_concurrent_tasks(model, ev) -> None:
    model.process_many([ev.sent(u, T0, "app.add") for u in ("u1", "u2", "u3")]
                       + [ev.started(u, T0 + 1) for u in ("u1", "u2", "u3")]
                       + [ev.succeeded("u2", T0 + 2, runtime=1.0)])
    assert model.snapshot().running == {ADD: 2}


def test_duplicate_started_counts_running_once(model, ev) -> None:
    model.process_many([ev.sent("u1", T0, "app.add"), ev.started("u1", T0 + 1),
                        ev.started("u1", T0 + 1)])
    assert model.snapshot().running == {ADD: 1}


# -- out-of-order delivery --------------------------------------------------------------------


def test_succeeded_before_started_leaves_nothing_running_and_success(model, ev) -> None:
    model.process_many([ev.sent("u1", T0, "app.add"), ev.received("u1", T0 + 1, "app.add"),
                        ev.succeeded("u1", T0 + 3, runtime=1.0), ev.started("u1", T0 + 2)])
    snap = model.snapshot()
    assert snap.running == {}
    assert state(model, "u1") == "SUCCESS"
    assert snap.lifecycle == lifecycle(
        snap, task_sent={ADD: 1}, task_received={ADD: 1}, task_started={ADD: 1},
        task_succeeded={ADD: 1}, task_failed={ADD: 0},
    )
    assert observed(snap.queue_wait) == {ADD: hist(WAIT, (0, 0, 1, 1), 2.0)}


def test_late_received_after_failed_keeps_failure(model, ev) -> None:
    model.process_many([ev.sent("u1", T0, "app.add"), ev.started("u1", T0 + 2),
                        ev.failed("u1", T0 + 3), ev.received("u1", T0 + 1, "app.add")])
    snap = model.snapshot()
    assert snap.running == {ADD: 0}
    assert state(model, "u1") == "FAILURE"
    assert snap.lifecycle["task-received"] == {ADD: 1}
    assert snap.lifecycle["task-failed"] == {ADD: 1}


def test_late_started_after_failed_does_not_run_again(model, ev) -> None:
    model.process_many([ev.sent("u1", T0, "app.add"), ev.started("u1", T0 + 2),
                        ev.failed("u1", T0 + 3), ev.started("u1", T0 + 2)])
    assert model.snapshot().running == {ADD: 0}
    assert state(model, "u1") == "FAILURE"


def test_name_learnt_after_started_does_not_leave_running_stuck(model, ev) -> None:
    # No task-sent; task-started overtakes task-received, which brings the name.
    model.process_many([ev.started("u1", T0 + 2), ev.received("u1", T0 + 1, "app.add"),
                        ev.succeeded("u1", T0 + 3, runtime=1.0)])
    snap = model.snapshot()
    assert snap.running == {UNKNOWN: 0}
    assert snap.lifecycle == lifecycle(
        snap, task_received={("app.add", "unknown"): 1}, task_started={UNKNOWN: 1},
        task_succeeded={UNKNOWN: 0, ("app.add", "unknown"): 1},
        task_failed={UNKNOWN: 0, ("app.add", "unknown"): 0},
    )


def test_queue_learnt_after_started_does_not_leave_running_stuck(model, ev) -> None:
    model.process_many([ev.started("u1", T0 + 2), ev.sent("u1", T0, "app.add", "q1"),
                        ev.failed("u1", T0 + 3)])
    snap = model.snapshot()
    assert snap.running == {UNKNOWN: 0}
    assert snap.lifecycle["task-failed"] == {UNKNOWN: 0, ("app.add", "q1"): 1}


def test_same_timestamp_terminal_event_wins_over_started(model, ev) -> None:
    model.process_many([ev.sent("u1", T0, "app.add"), ev.succeeded("u1", T0 + 1, runtime=0.0),
                        ev.started("u1", T0 + 1)])
    assert model.snapshot().running == {}
    assert state(model, "u1") == "SUCCESS"


@pytest.mark.parametrize("resend_first", [True, False], ids=["resent-then-retried",
                                                             "retried-then-resent"])
def test_retried_task_counts_every_attempt_and_one_success(model, ev, resend_first) -> None:
    # Celery's retry() re-sends the message (task-sent, same id) and then the worker emits
    # task-retried; the other order is checked as well.
    events = []
    t = T0
    for attempt in range(3):
        events += [ev.sent("u1", t, "app.add", retries=attempt),
                   ev.received("u1", t + 0.25, "app.add", retries=attempt),
                   ev.started("u1", t + 0.5)]
        t += 1
    # Pull each attempt's task-retried (except after the last attempt) into place.
    retried = [ev.retried("u1", T0 + 0.75), ev.retried("u1", T0 + 1.75)]
    ordered = events[:3] + ([events[3], retried[0]] if resend_first else [retried[0], events[3]])
    ordered += events[4:6] + ([events[6], retried[1]] if resend_first
                              else [retried[1], events[6]])
    ordered += events[7:] + [ev.succeeded("u1", T0 + 2.75, runtime=0.25)]

    running_seen = []
    for event in ordered:
        model.process_many([event])
        running_seen.append(model.snapshot().running.get(ADD, 0))
    snap = model.snapshot()
    assert snap.lifecycle == lifecycle(
        snap, task_sent={ADD: 3}, task_received={ADD: 3}, task_started={ADD: 3},
        task_retried={ADD: 2}, task_succeeded={ADD: 1}, task_failed={ADD: 0},
    )
    assert snap.running == {ADD: 0}
    assert max(running_seen) == 1
    assert state(model, "u1") == "SUCCESS"
    assert snap.tasks_in_memory == 1


# -- shuffled replay --------------------------------------------------------------------------


def _workload(ev, rng: random.Random) -> list[list[dict]]:
    """Per-task event lists: 3 names x 2 queues, 1 in 5 fails, 1 in 7 retries once."""
    tasks = []
    for i in range(300):
        uuid = f"task-{i}"
        name = ("app.add", "app.mul", "app.mail")[i % 3]
        queue = ("default", "slow")[i % 2]
        t = T0 + i * 4.0
        runtime = rng.randrange(1, 64) / 16
        task: list[dict] = []
        if i % 7 == 0:
            task += [ev.sent(uuid, t, name, queue), ev.received(uuid, t + 0.0625, name),
                     ev.started(uuid, t + 0.125), ev.retried(uuid, t + 0.25)]
            t += 0.5
        task += [ev.sent(uuid, t, name, queue), ev.received(uuid, t + 0.0625, name),
                 ev.started(uuid, t + 0.125)]
        if i % 5 == 0:
            task.append(ev.failed(uuid, t + 0.125 + runtime,
                                  ("KeyError('k')", "billing.CardDeclined('x')")[i % 2]))
        else:
            task.append(ev.succeeded(uuid, t + 0.125 + runtime, runtime))
        tasks.append(task)
    return tasks


def _replay(model: Model, events: list[dict], batch: int = 17) -> ModelSnapshot:
    for start in range(0, len(events), batch):
        model.process_many(events[start:start + batch])
    return model.snapshot()


def _totals(counts: dict) -> dict[str, int]:
    return {t: sum(by_labels.values()) for t, by_labels in counts.items()}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_interleaved_lifecycles_give_the_ordered_counters(make_model, ev, seed) -> None:
    ordered_model, shuffled_model = make_model(), make_model()
    rng = random.Random(seed)
    tasks = _workload(ev, rng)
    ordered = [dict(e) for task in tasks for e in task]
    # Random interleaving of the tasks, each task's own events kept in order (what several
    # workers and producers publishing at once look like).
    queues = [[dict(e) for e in task] for task in tasks]
    interleaved = []
    while queues:
        pick = rng.randrange(len(queues))
        interleaved.append(queues[pick].pop(0))
        if not queues[pick]:
            queues.pop(pick)
    assert len(interleaved) == len(ordered)

    expected = _replay(ordered_model, ordered)
    got = _replay(shuffled_model, interleaved)
    # The lag describes the batch's last event, which the interleaving changes.
    assert dataclasses.replace(got, event_lag=None) == dataclasses.replace(expected, event_lag=None)
    assert expected.lifecycle["task-sent"] == {
        # 50 tasks per (name, queue); the 43 retried ones (i = 7k) add 8 to i = 0 mod 6, else 7.
        ("app.add", "default"): 58, ("app.add", "slow"): 57,
        ("app.mul", "default"): 57, ("app.mul", "slow"): 57,
        ("app.mail", "default"): 57, ("app.mail", "slow"): 57,
    }
    assert _totals(expected.lifecycle) == {
        "task-sent": 343, "task-received": 343, "task-started": 343, "task-succeeded": 240,
        "task-failed": 60, "task-retried": 43, "task-revoked": 0, "task-rejected": 0,
        "task-cancelled": 0,
    }
    assert set(expected.running.values()) == {0}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fully_shuffled_events_keep_totals_and_final_states(make_model, ev, seed) -> None:
    # A full shuffle also reorders one task's own events: counts taken before the name and
    # queue are known go under "unknown", so only totals and states can match exactly. The
    # index keeps every task (300 finished: under a quarter of 2,000), as the shuffle reaches
    # across all of them.
    ordered_model, shuffled_model = make_model(max_tasks=2000), make_model(max_tasks=2000)
    rng = random.Random(seed)
    tasks = _workload(ev, rng)
    ordered = [dict(e) for task in tasks for e in task]
    shuffled = [dict(e) for e in ordered]
    rng.shuffle(shuffled)

    expected = _replay(ordered_model, ordered)
    got = _replay(shuffled_model, shuffled)
    assert _totals(got.lifecycle) == _totals(expected.lifecycle)
    assert sum(got.exceptions.values()) == sum(expected.exceptions.values()) == 60
    assert set(got.running.values()) == {0}
    assert got.events_received == expected.events_received
    assert [(u, r.state) for u, r in sorted(shuffled_model.index)] == [
        (u, r.state) for u, r in sorted(ordered_model.index)]
    assert {r.state for _, r in ordered_model.index} == {"SUCCESS", "FAILURE"}


# -- labels -----------------------------------------------------------------------------------


def test_started_for_an_unknown_task_counts_under_unknown_labels(model, ev) -> None:
    model.process_many([ev.started("never-seen", T0), ev.succeeded("never-seen", T0 + 1, 1.0)])
    snap = model.snapshot()
    assert snap.lifecycle == lifecycle(
        snap, task_started={UNKNOWN: 1}, task_succeeded={UNKNOWN: 1}, task_failed={UNKNOWN: 0},
    )
    assert snap.running == {UNKNOWN: 0}
    assert observed(snap.runtime) == {(*UNKNOWN, "SUCCESS"): hist(RUNTIME, (0, 1, 1, 1), 1.0)}


def test_failure_of_an_unknown_task_counts_exception_under_unknown_name(model, ev) -> None:
    model.process_many([ev.failed("never-seen", T0, "KeyError: 'k'")])
    snap = model.snapshot()
    assert snap.exceptions == {("unknown", "KeyError"): 1}
    assert snap.lifecycle["task-failed"] == {UNKNOWN: 1}


def test_sent_without_queue_or_routing_key_keeps_queue_unknown(model, ev) -> None:
    model.process_many([ev.sent("u1", T0, "app.add", queue=None, routing_key=None)])
    assert model.snapshot().lifecycle["task-sent"] == {("app.add", "unknown"): 1}


def test_sent_without_queue_uses_the_routing_key(model, ev) -> None:
    model.process_many([ev.sent("u1", T0, "app.add", queue=None, routing_key="emails")])
    assert model.snapshot().lifecycle["task-sent"] == {("app.add", "emails"): 1}


def test_queue_comes_from_the_workers_only_queue_without_task_sent(model, ev, clock) -> None:
    model.set_worker_queues({WORKER: ["emails"], "celery@w2": ["a", "b"]})
    model.process_many([
        ev.received("u1", T0, "app.mail"), ev.started("u1", T0 + 1),
        ev.succeeded("u1", T0 + 2, runtime=1.0),
        ev.received("u2", T0, "app.mail", hostname="celery@w2"),
    ])
    clock.advance(2.0)  # u2's queue stays unknown: counted once its task-sent cannot come
    snap = model.snapshot()
    assert snap.lifecycle["task-received"] == {("app.mail", "emails"): 1,
                                               ("app.mail", "unknown"): 1}
    assert snap.lifecycle["task-started"] == {("app.mail", "emails"): 1}
    assert snap.lifecycle["task-succeeded"] == {("app.mail", "emails"): 1,
                                                ("app.mail", "unknown"): 0}


def test_task_sent_queue_wins_over_the_workers_queue(model, ev) -> None:
    model.set_worker_queues({WORKER: ["emails"]})
    model.process_many([ev.sent("u1", T0, "app.add", "default"),
                        ev.received("u1", T0 + 1, "app.add")])
    assert model.snapshot().lifecycle["task-received"] == {ADD: 1}


def test_names_beyond_the_limit_fold_into_other(make_model, ev) -> None:
    model = make_model(max_task_names=2)
    model.process_many([ev.sent("u1", T0, "app.a"), ev.sent("u2", T0, "app.b"),
                        ev.sent("u3", T0, "app.c"), ev.sent("u4", T0, "app.c"),
                        ev.sent("u5", T0, "app.a")])
    snap = model.snapshot()
    assert snap.lifecycle["task-sent"] == {("app.a", "default"): 2, ("app.b", "default"): 1,
                                           ("other", "default"): 2}
    assert snap.task_names_folded == 1


def test_each_distinct_folded_name_is_counted_once(make_model, ev) -> None:
    model = make_model(max_task_names=2)
    names = ["app.a", "app.b", "app.c", "app.d", "app.c", "app.d", "app.e"]
    model.process_many([ev.sent(f"u{i}", T0, name) for i, name in enumerate(names)])
    snap = model.snapshot()
    assert snap.task_names_folded == 3
    assert snap.lifecycle["task-sent"] == {("app.a", "default"): 1, ("app.b", "default"): 1,
                                           ("other", "default"): 5}


def test_folded_task_lifecycle_stays_under_other(make_model, ev) -> None:
    model = make_model(max_task_names=1)
    model.process_many([*ev.success("u1", T0, "app.a"), *ev.failure("u2", T0, "app.b")])
    snap = model.snapshot()
    assert snap.lifecycle["task-failed"] == {("app.a", "default"): 0, ("other", "default"): 1}
    assert snap.exceptions == {("other", "ValueError"): 1}
    assert snap.running == {("app.a", "default"): 0, ("other", "default"): 0}


# -- task index -------------------------------------------------------------------------------


def test_evicting_a_running_task_decrements_running_and_counts_an_eviction(make_model,
                                                                          ev) -> None:
    model = make_model(max_tasks=2)
    model.process_many([ev.sent("u1", T0, "app.add"), ev.started("u1", T0 + 1)])
    running_before = model.snapshot().running
    model.process_many([ev.sent("u2", T0 + 2, "app.mul"), ev.sent("u3", T0 + 3, "app.mul")])
    snap = model.snapshot()
    assert running_before == {ADD: 1}
    assert snap.running == {ADD: 0}
    assert snap.task_index_evictions == 1
    assert snap.tasks_in_memory == 2
    assert model.index.get("u1") is None


def test_evicting_a_finished_task_leaves_running_alone_and_is_no_eviction(make_model,
                                                                          ev) -> None:
    model = make_model(max_tasks=1)
    model.process_many([*ev.success("u1", T0, "app.add"), ev.sent("u2", T0 + 1, "app.add"),
                        ev.started("u2", T0 + 2)])
    snap = model.snapshot()
    assert snap.running == {ADD: 1}
    assert snap.task_index_evictions == 0  # only unfinished tasks lost to the limit count
    assert snap.tasks_in_memory == 1


def test_finished_tasks_make_room_before_any_running_one(make_model, ev) -> None:
    # 8 tasks in all, at most 2 finished ones: a flood of finished tasks never pushes out the
    # running task, whose end still joins to its name and queue.
    model = make_model(max_tasks=8)
    model.process_many([ev.sent("long", T0, "app.mul"), ev.started("long", T0 + 1)])
    for i in range(50):
        model.process_many(ev.success(f"u{i}", T0 + 2 + i, "app.add"))
    assert model.snapshot().tasks_in_memory == 3  # long + the 2 latest finished
    model.process_many([ev.succeeded("long", T0 + 99, 98.0)])
    snap = model.snapshot()
    assert snap.lifecycle["task-succeeded"] == {ADD: 50, ("app.mul", "default"): 1}
    assert snap.running == {ADD: 0, ("app.mul", "default"): 0}
    assert snap.task_index_evictions == 0
    # A late duplicate of a recently finished task is still recognised.
    model.process_many([ev.succeeded("u49", T0 + 51.125 + 0.25, 0.25)])
    assert model.snapshot().events_malformed == {"duplicate": 1}


# -- malformed events -------------------------------------------------------------------------


def test_malformed_events_are_counted_by_reason_and_the_next_good_one_applies(model,
                                                                             ev) -> None:
    no_uuid = ev.sent("u0", T0, "app.add")
    del no_uuid["uuid"]
    model.process_many([
        "not json",
        no_uuid,
        ev.sent("u1", T0, "app.add"),
        {**ev.started("u1", T0 + 1), "timestamp": "soon"},
        {**ev.succeeded("u1", T0 + 2, runtime=1.0), "runtime": "fast"},
        {"type": "task-exploded", "timestamp": T0},
        ev.started("u1", T0 + 1),
    ])
    model.count_malformed("decode_error")
    snap = model.snapshot()
    assert snap.events_malformed == {"not_a_dict": 1, "missing_uuid": 1, "bad_timestamp": 1,
                                     "bad_field": 1, "unknown_type": 1, "decode_error": 1}
    assert snap.events_received == {"task-sent": 1, "task-started": 1}
    assert snap.lifecycle["task-started"] == {ADD: 1}
    assert snap.running == {ADD: 1}


# -- workers ----------------------------------------------------------------------------------


def test_heartbeat_makes_a_worker_up_with_its_counts(model, ev, clock) -> None:
    model.process_many([ev.heartbeat(WORKER, T0 - 1, active=2, processed=10)])
    assert model.snapshot().workers == (
        WorkerState(hostname=WORKER, up=True, active=2, processed=10, last_heartbeat=T0 - 1,
                    clock_offset=1.0),
    )


def test_worker_is_up_until_the_timeout_then_down_then_forgotten(model, ev, clock) -> None:
    model.process_many([ev.heartbeat(WORKER, T0, active=2, processed=10)])
    clock.advance(30.0)
    at_timeout = model.snapshot().workers
    clock.advance(0.5)
    after_timeout = model.snapshot().workers
    clock.advance(3600.0 - 30.5)
    at_retention = model.snapshot().workers
    clock.advance(0.5)
    after_retention = model.snapshot().workers
    assert at_timeout == (WorkerState(WORKER, True, 2, 10, T0, 0.0),)
    assert after_timeout == (WorkerState(WORKER, False, 0, 10, T0, 0.0),)
    assert at_retention == (WorkerState(WORKER, False, 0, 10, T0, 0.0),)
    assert after_retention == ()


def test_worker_liveness_uses_the_exporter_clock_not_the_event_timestamp(model, ev,
                                                                        clock) -> None:
    # The worker's clock is an hour behind; the heartbeat just arrived, so it is up.
    model.process_many([ev.heartbeat(WORKER, T0 - 3600, active=1, processed=1)])
    assert model.snapshot().workers == (WorkerState(WORKER, True, 1, 1, T0 - 3600, 3600.0),)


def test_worker_offline_is_down_immediately(model, ev, clock) -> None:
    model.process_many([ev.heartbeat(WORKER, T0, active=3, processed=7)])
    clock.advance(1.0)
    model.process_many([ev.offline(WORKER, T0 + 1)])
    assert model.snapshot().workers == (WorkerState(WORKER, False, 0, 7, T0 + 1, 0.0),)


def test_heartbeat_after_offline_brings_the_worker_back(model, ev, clock) -> None:
    model.process_many([ev.offline(WORKER, T0)])
    clock.advance(5.0)
    model.process_many([ev.heartbeat(WORKER, T0 + 5, active=0, processed=0)])
    assert model.snapshot().workers == (WorkerState(WORKER, True, 0, 0, T0 + 5, 0.0),)


def test_worker_online_before_any_heartbeat_has_no_active_or_processed(model, ev) -> None:
    model.process_many([ev.online(WORKER, T0)])
    assert model.snapshot().workers == (WorkerState(WORKER, True, None, None, T0, 0.0),)


def test_heartbeat_keeps_a_worker_up_past_the_first_timeout(model, ev, clock) -> None:
    model.process_many([ev.online(WORKER, T0)])
    clock.advance(20.0)
    model.process_many([ev.heartbeat(WORKER, T0 + 20, active=1, processed=4)])
    clock.advance(20.0)
    assert model.snapshot().workers == (WorkerState(WORKER, True, 1, 4, T0 + 20, 0.0),)


# -- exporter's own state ---------------------------------------------------------------------


def test_process_many_sets_last_event_and_counts_events_by_type(model, ev, clock) -> None:
    empty = model.snapshot()
    model.process_many([*ev.success("u1", T0, "app.add"), ev.heartbeat(WORKER, T0)])
    clock.advance(2.0)
    model.process_many([ev.heartbeat(WORKER, T0 + 2), ev.sent("u2", T0 + 2, "app.add")])
    model.process_many([ev.sent("u3", T0 + 3, "app.add")], received_at=T0 + 7.0)
    snap = model.snapshot()
    assert empty.last_event is None
    assert empty.events_received == {}
    assert snap.last_event == T0 + 7.0
    assert snap.events_received == {"task-sent": 3, "task-received": 1, "task-started": 1,
                                    "task-succeeded": 1, "worker-heartbeat": 2}


def test_only_malformed_events_leave_last_event_unset(model) -> None:
    model.process_many([None, {"type": "task-sent"}])
    snap = model.snapshot()
    assert snap.last_event is None
    assert snap.events_received == {}


def test_process_many_stamps_local_received_on_each_event(model, ev) -> None:
    event = ev.sent("u1", T0, "app.add")
    model.process_many([event], received_at=T0 + 0.5)
    assert event["local_received"] == T0 + 0.5


def test_snapshot_is_not_changed_by_later_events(model, ev, clock) -> None:
    model.process_many(ev.success("u1", T0, "app.add"))
    snap = model.snapshot()
    clock.advance(1.0)
    model.process_many(ev.success("u2", T0 + 1, "app.add"))
    assert snap.taken_at == T0
    assert snap.lifecycle["task-sent"] == {ADD: 1}
    assert snap.runtime[(*ADD, "SUCCESS")].count == 1
    assert snap.events_received["task-sent"] == 1
    assert model.snapshot().lifecycle["task-sent"] == {ADD: 2}


def test_empty_model_snapshot(model: Model, clock: Callable[[], float]) -> None:
    snap = model.snapshot()
    assert snap == ModelSnapshot(
        taken_at=T0, lifecycle={t: {} for t in LIFECYCLE_TYPES}, exceptions={}, runtime={},
        queue_wait={}, running={}, workers=(), events_received={}, events_malformed={},
        last_event=None, event_lag=None, tasks_in_memory=0, task_index_evictions=0,
        task_names_folded=0,
    )


def test_a_failing_handler_costs_one_event_not_the_batch(model, ev, monkeypatch) -> None:
    import exporter.state.model as model_module

    def broken(*args):
        raise RuntimeError("bug")

    monkeypatch.setitem(model_module._HANDLERS, "task-received", broken)
    model.process_many([ev.sent("u1", T0, "app.add"), ev.received("u1", T0 + 1, "app.add"),
                        ev.started("u1", T0 + 2)])
    snap = model.snapshot()
    assert snap.events_malformed == {"handler_error": 1}
    assert snap.lifecycle["task-started"] == {("app.add", "default"): 1}


def test_event_lag_is_receipt_time_minus_the_last_events_timestamp(model, ev) -> None:
    model.process_many([ev.sent("u1", T0 - 3.0, "app.add"),
                        ev.received("u1", T0 - 1.25, "app.add")])
    assert model.snapshot().event_lag == 1.25


def test_received_before_its_sent_is_counted_under_the_queue_sent_brings(model, ev) -> None:
    # Producers send task-sent (one was seen), so a task-received racing ahead of its own
    # task-sent waits for the queue instead of being counted under "unknown".
    model.process_many([ev.sent("u0", T0, "app.add", queue="a")])
    model.process_many([ev.received("u1", T0 + 0.2, "app.add")])
    assert model.snapshot().lifecycle["task-received"] == {}
    model.process_many([ev.sent("u1", T0 + 0.1, "app.add", queue="a")])
    snap = model.snapshot()
    assert snap.lifecycle["task-received"] == {("app.add", "a"): 1}
    assert snap.lifecycle["task-sent"] == {("app.add", "a"): 2}


def test_a_task_whose_events_all_overtake_its_task_sent_counts_under_its_queue(model, ev):
    # The worker's events raced ahead of the producer's task-sent, the end included: they are
    # held and counted under the queue task-sent brings (before: started and succeeded under
    # "unknown", the flaky integration tests' "4 under a, 2 under unknown").
    a = ("app.add", "a")
    model.process_many([ev.sent("u0", T0, "app.add", queue="a")])
    model.process_many([ev.received("u1", T0 + 0.2, "app.add"), ev.started("u1", T0 + 0.3),
                        ev.succeeded("u1", T0 + 0.4, runtime=0.1)])
    snap = model.snapshot()
    assert (snap.lifecycle["task-received"], snap.lifecycle["task-started"], snap.running,
            model.task_summary("u1")) == ({}, {}, {}, None)
    model.process_many([ev.sent("u1", T0 + 0.1, "app.add", queue="a")])
    snap = model.snapshot()
    assert snap.lifecycle == lifecycle(
        snap, task_sent={a: 2}, task_received={a: 1}, task_started={a: 1},
        task_succeeded={a: 1}, task_failed={a: 0})
    assert (snap.running, model.task_summary("u1")) == ({a: 0}, ("SUCCESS", "app.add", "a"))
    assert {labels: h.count for labels, h in snap.queue_wait.items()} == {a: 1}
    assert snap.events_received["task-started"] == 1


def test_held_events_count_under_unknown_when_task_sent_never_comes(model, ev, clock):
    model.process_many([ev.sent("u0", T0, "app.add", queue="a")])
    model.process_many([ev.received("u1", T0, "app.add"), ev.started("u1", T0 + 1)])
    clock.advance(1.9)
    assert model.snapshot().running == {}
    clock.advance(0.2)
    snap = model.snapshot()
    key = ("app.add", "unknown")
    assert (snap.lifecycle["task-received"], snap.lifecycle["task-started"], snap.running) == (
        {key: 1}, {key: 1}, {key: 1})


def test_a_duplicate_held_event_counts_once(model, ev):
    model.process_many([ev.sent("u0", T0, "app.add", queue="a")])
    started = ev.started("u1", T0 + 1)
    model.process_many([ev.received("u1", T0, "app.add"), started, dict(started)])
    model.process_many([ev.sent("u1", T0, "app.add", queue="a")])
    snap = model.snapshot()
    assert (snap.lifecycle["task-started"], snap.events_malformed) == (
        {("app.add", "a"): 1}, {"duplicate": 1})


def test_without_any_task_sent_holding_stops_after_the_first_expired_hold(model, ev, clock):
    # Celery's default: no task_send_sent_event. One hold expires, then tasks count at once,
    # until a task-sent shows that producers send it.
    key = ("app.add", "unknown")
    model.process_many([ev.received("u1", T0, "app.add")])
    assert model.snapshot().lifecycle["task-received"] == {}
    clock.advance(2.0)
    model.tick()
    model.process_many([ev.received("u2", T0 + 2, "app.add")])
    assert model.snapshot().lifecycle["task-received"] == {key: 2}
    model.process_many([ev.sent("u3", T0 + 3, "app.add", queue="a"),
                        ev.received("u4", T0 + 3, "app.add")])
    assert model.snapshot().lifecycle["task-received"] == {key: 2}


def test_a_worker_with_one_queue_names_it_without_a_hold(model, ev):
    model.set_worker_queues({WORKER: ["a"]})
    model.process_many([ev.sent("u0", T0, "app.add", queue="a"),
                        ev.received("u1", T0, "app.add"), ev.started("u1", T0 + 1)])
    assert model.snapshot().running == {("app.add", "a"): 1}


def test_histograms_exist_at_zero_from_a_pairs_first_sighting(model, ev) -> None:
    model.process_many([ev.sent("u1", T0, "app.add")])
    snap = model.snapshot()
    assert {labels: h.count for labels, h in snap.runtime.items()} == {
        ("app.add", "default", "SUCCESS"): 0, ("app.add", "default", "FAILURE"): 0}
    assert {labels: h.count for labels, h in snap.queue_wait.items()} == {
        ("app.add", "default"): 0}


def test_cheap_accessors_read_what_a_snapshot_would(model, ev) -> None:
    model.process_many([ev.sent("u1", T0, "app.add"), ev.received("u1", T0, "app.add"),
                        ev.started("u1", T0 + 1), ev.heartbeat(WORKER, T0 + 1, active=1)])
    snap = model.snapshot()
    assert model.running() == snap.running == {("app.add", "default"): 1}
    assert model.worker_states() == snap.workers
    assert model.task_summary("u1") == ("STARTED", "app.add", "default")
    assert model.task_summary("never-seen") is None


@pytest.mark.parametrize("skew", [0.02, 7200.0, -0.02, -7200.0])
def test_worker_clock_behind_or_ahead_of_the_producer_never_undoes_an_end(model, ev, skew):
    worker = T0 - skew  # the worker's clock, `skew` seconds behind the producer's
    model.process_many([ev.sent("u1", T0, "app.add"), ev.received("u1", worker, "app.add"),
                        ev.started("u1", worker + 0.001)])
    assert (model.task_summary("u1").state, model.running()) == ("STARTED", {ADD: 1})
    model.process_many([ev.succeeded("u1", worker + 0.01, runtime=0.009)])
    assert (model.task_summary("u1").state, model.running()) == ("SUCCESS", {ADD: 0})
    model.process_many([ev.sent("u2", T0, "app.add"), ev.received("u2", worker, "app.add"),
                        ev.started("u2", worker + 0.001), ev.failed("u2", worker + 0.01)])
    assert (model.task_summary("u2").state, model.running()) == ("FAILURE", {ADD: 0})


def test_a_workers_clock_offset_is_the_lowest_of_its_latest_samples(make_model, ev, clock,
                                                                   caplog) -> None:
    model = make_model(clock_offset_warning=1.0)
    with caplog.at_level("WARNING", logger="exporter.state.workers"):
        model.process_many([ev.heartbeat(WORKER, T0 - 2.0)])      # 2 s behind
        clock.advance(2.0)
        model.process_many([ev.heartbeat(WORKER, T0 + 2.0 - 6.0)])  # 6 s: 2 s behind, 4 s late
        assert model.worker_states()[0].clock_offset == 2.0
        clock.advance(2.0)
        model.process_many([ev.heartbeat(WORKER, T0 + 4.0 - 1.5)])  # the clock set forward
        assert model.worker_states()[0].clock_offset == 1.5
        assert caplog.records == []  # beyond the threshold for 4 s only
        clock.advance(2.0)
        model.process_many([ev.heartbeat(WORKER, T0 + 6.0 - 1.5)])
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and f"hostname={WORKER} offset=1.500s" in warnings[0]
    # Behind may also be late, if every sample of the window was.
    assert ("its clock is behind the exporter's, or each of its last 4 worker events reached "
            "the exporter late (a backlog that lasted as long") in warnings[0]


def test_a_backlog_longer_than_the_window_read_back_at_once_is_not_warned_about(
        make_model, ev, clock, caplog) -> None:
    # Before: the warning was checked at each sample, so the exporter paused 60 s and reading
    # 30 heartbeats back in one go logged "offset=28.000s ... behind" for a worker in sync
    # (a figure the metric never showed), and muted the warnings about it for 10 minutes.
    model = make_model(clock_offset_warning=1.0)
    with caplog.at_level("WARNING", logger="exporter.state.workers"):
        model.process_many([ev.heartbeat(WORKER, clock.now - 0.01)])
        sent = [clock.now + 2.0 * beat for beat in range(1, 31)]
        clock.advance(60.5)  # paused: 30 heartbeats wait, then come in batches of ten
        for batch in range(3):
            model.process_many([ev.heartbeat(WORKER, timestamp)
                                for timestamp in sent[10 * batch:10 * batch + 10]])
            clock.advance(0.05)
        assert round(model.worker_states()[0].clock_offset, 6) == 0.6  # the window's lowest
        clock.advance(1.85)
        model.process_many([ev.heartbeat(WORKER, clock.now - 0.01)])  # read on time again
    assert round(model.worker_states()[0].clock_offset, 6) == 0.01
    assert caplog.records == []


def test_an_offset_that_moves_by_more_than_the_threshold_is_warned_about_again(
        make_model, ev, clock, caplog) -> None:
    model = make_model(clock_offset_warning=1.0)
    with caplog.at_level("WARNING", logger="exporter.state.workers"):
        for _ in range(4):  # 3 s behind for 6 s
            model.process_many([ev.heartbeat(WORKER, clock.now - 3.0)])
            clock.advance(2.0)
        for _ in range(3):  # then 3 s ahead (set forward, or restarted under another clock)
            model.process_many([ev.heartbeat(WORKER, clock.now + 3.0)])
            clock.advance(2.0)
        for _ in range(3):  # and 3.5 s ahead: within the threshold of the last warning
            model.process_many([ev.heartbeat(WORKER, clock.now + 3.5)])
            clock.advance(2.0)
    warnings = [r.getMessage() for r in caplog.records]
    assert [w.split(":")[0] for w in warnings] == [
        f"worker clock offset hostname={WORKER} offset=3.000s threshold=1.000s",
        f"worker clock offset hostname={WORKER} offset=-3.000s threshold=1.000s"]
    assert "its clock is ahead of the exporter's;" in warnings[1]


def test_a_worker_restarted_as_a_new_process_starts_a_new_offset_window(make_model, ev,
                                                                        clock) -> None:
    model = make_model(clock_offset_warning=1.0)
    model.process_many([ev.heartbeat(WORKER, clock.now - 0.01)])
    clock.advance(2.0)
    online = ev.online(WORKER, clock.now - 5.0)  # back on a host whose clock is 5 s behind
    model.process_many([{**online, "processed": 0}])
    assert model.worker_states()[0].clock_offset == 5.0


def test_a_backlog_shorter_than_the_window_leaves_the_clock_offset_alone(make_model, ev, clock,
                                                                          caplog) -> None:
    # Before: an exponential moving average; four heartbeats read 8, 6, 4 and 2 s late (the
    # exporter paused 8 s) moved it to 2.95 s and logged "its clock is behind" for a worker
    # 10 ms behind.
    model = make_model(clock_offset_warning=1.0)
    with caplog.at_level("WARNING", logger="exporter.state.workers"):
        for _ in range(5):
            model.process_many([ev.heartbeat(WORKER, clock.now - 0.01)])
            clock.advance(2.0)
        sent = [clock.now + 2.0 * beat - 0.01 for beat in range(4)]
        clock.advance(8.0)  # paused: these four heartbeats are read together, late
        model.process_many([ev.heartbeat(WORKER, timestamp) for timestamp in sent])
        assert round(model.worker_states()[0].clock_offset, 6) == 0.01
        for _ in range(OFFSET_SAMPLES):  # caught up, until the window has moved past it all
            clock.advance(2.0)
            model.process_many([ev.heartbeat(WORKER, clock.now - 0.02)])
    assert round(model.worker_states()[0].clock_offset, 6) == 0.02
    assert caplog.records == []


def test_a_clock_set_back_shows_once_the_window_holds_only_later_samples(make_model, ev,
                                                                         clock) -> None:
    model = make_model(clock_offset_warning=1.0)
    model.process_many([ev.heartbeat(WORKER, T0)])
    offsets = []
    for beat in range(1, OFFSET_SAMPLES + 1):
        clock.advance(2.0)
        model.process_many([ev.heartbeat(WORKER, T0 + 2.0 * beat - 5.0)])  # now 5 s behind
        offsets.append(model.worker_states()[0].clock_offset)
    assert offsets == [0.0] * (OFFSET_SAMPLES - 1) + [5.0]


def test_a_worker_ahead_is_warned_about_its_clock_only(make_model, ev, clock, caplog) -> None:
    model = make_model(clock_offset_warning=1.0)
    with caplog.at_level("WARNING", logger="exporter.state.workers"):
        model.process_many([ev.heartbeat(WORKER, T0 + 3.0)])
        clock.advance(5.0)
        model.process_many([ev.heartbeat(WORKER, T0 + 8.0)])
    [warning] = [r.getMessage() for r in caplog.records]
    assert f"hostname={WORKER} offset=-3.000s" in warning
    assert "its clock is ahead of the exporter's;" in warning and "late" not in warning


def test_a_timestamp_replaced_as_implausible_still_gives_the_real_offset(model, ev) -> None:
    model.process_many([ev.heartbeat(WORKER, T0 - 3 * 86400.0)])
    state = model.worker_states()[0]
    assert (state.last_heartbeat, state.clock_offset) == (T0, 3 * 86400.0)


def test_excluded_task_names_stay_out_of_the_history_but_are_counted(make_model, ev) -> None:
    sink: list[dict] = []
    model = make_model(history=sink.append, history_exclude=("celery.*",))
    model.process_many([ev.sent("u1", T0, "celery.chord_unlock"),
                        ev.received("u1", T0, "celery.chord_unlock"), ev.started("u1", T0 + 1),
                        ev.sent("u2", T0, "app.add"), ev.started("u2", T0 + 1)])
    assert [e["uuid"] for e in sink] == ["u2", "u2"]
    assert model.snapshot().lifecycle["task-started"] == {
        ("celery.chord_unlock", "default"): 1, ADD: 1}


def _missed(model) -> int:
    return model.worker_states()[0].missed_task_events


def test_missed_task_started_events_are_counted_from_the_heartbeats_processed(model, ev):
    beat = iter(range(1000))

    def heartbeat(processed: int) -> None:
        model.process_many([ev.heartbeat(WORKER, T0 + next(beat), processed=processed)])

    def start(task_id: str) -> None:
        model.process_many([ev.started(task_id, T0)])

    heartbeat(100)           # baseline: 100 tasks before the exporter looked
    start("a"), start("b")
    heartbeat(102)
    heartbeat(102)
    assert _missed(model) == 0
    heartbeat(106)           # 4 accepted; the 4 task-started may still be on their way
    assert _missed(model) == 0
    start("c")               # one of them arrives late
    heartbeat(106)           # 3 never came: missed, counted once
    heartbeat(106)
    assert _missed(model) == 3
    start("d")               # later than a heartbeat interval: no going back (a counter)
    heartbeat(107)
    heartbeat(107)
    assert _missed(model) == 3


def test_a_restarted_worker_starts_a_new_baseline_and_keeps_what_was_missed(model, ev):
    for t, processed in enumerate((10, 12, 12)):  # 2 starts missed
        model.process_many([ev.heartbeat(WORKER, T0 + t, processed=processed)])
    assert _missed(model) == 2
    model.process_many([ev.heartbeat(WORKER, T0 + 3, processed=0)])  # restarted
    model.process_many([ev.started("x", T0 + 4)])
    for t in (5, 6):
        model.process_many([ev.heartbeat(WORKER, T0 + t, processed=1)])
    assert _missed(model) == 2


def test_task_started_before_the_first_heartbeat_counts_for_nothing(model, ev):
    model.process_many([ev.started("early", T0)])        # no baseline yet: not counted
    for t, processed in enumerate((7, 7, 8, 8)):
        if processed == 8 and t == 2:
            model.process_many([ev.started("seen", T0 + t)])
        model.process_many([ev.heartbeat(WORKER, T0 + t, processed=processed)])
    assert _missed(model) == 0


def test_a_quiet_solo_worker_is_silent_then_down_and_others_are_down_at_the_timeout(
        make_model, ev, clock) -> None:
    model = make_model(solo_busy_timeout=600.0)
    model.process_many([ev.heartbeat(WORKER, T0), ev.heartbeat("celery@prefork", T0)])
    model.set_worker_pools({WORKER: "solo", "celery@prefork": "prefork"})

    def states() -> dict[str, tuple[bool, bool]]:
        return {w.hostname: (w.up, w.silent) for w in model.worker_states()}

    clock.advance(31.0)  # past the 30 s worker timeout
    assert states() == {WORKER: (True, True), "celery@prefork": (False, False)}
    clock.advance(600.0)  # past the solo busy timeout
    assert states() == {WORKER: (False, False), "celery@prefork": (False, False)}


def test_a_worker_that_stops_heartbeating_but_keeps_working_stays_up(model, ev, clock):
    # Celery workers can stop sending heartbeats after a broker restart while they keep
    # running tasks; their task events show they live (Celery's own events.State takes them
    # as heartbeats too). Before: down after worker_timeout (30 s) and its running task lost.
    model.process_many([ev.heartbeat(WORKER, T0)])
    for i in range(6):
        clock.advance(10)
        t = T0 + 10 * (i + 1)
        model.process_many([ev.sent(f"u{i}", t, "app.add"), ev.received(f"u{i}", t, "app.add"),
                            ev.started(f"u{i}", t)])
    snap = model.snapshot()
    assert [(w.hostname, w.up, w.last_heartbeat) for w in snap.workers] == [(WORKER, True, T0)]
    assert (snap.running, snap.lost) == ({ADD: 6}, {ADD: 0})
    clock.advance(31)  # then silence: down
    assert [w.up for w in model.snapshot().workers] == [False]


def test_task_events_do_not_bring_up_a_worker_never_heard_from(model, ev):
    # A worker without heartbeats (--without-heartbeat) would show up while busy and down
    # when idle: only worker-* events make a worker known.
    model.process_many([ev.sent("u1", T0, "app.add"), ev.received("u1", T0, "app.add"),
                        ev.started("u1", T0)])
    assert model.snapshot().workers == ()


def test_names_no_worker_registered_take_at_most_half_the_cap(make_model, ev, caplog) -> None:
    # send_task of names no worker knows (rejected by the workers) used to take the cap first
    # come, first served, and a real task sent later folded into "other" silently.
    model = make_model(max_task_names=4)
    model.set_registered_names(["app.add", "app.pay"])
    junk = [ev.sent(f"j{i}", T0, f"report.{i}") for i in range(5)]
    model.process_many([*junk, ev.sent("u1", T0 + 1, "app.add"), ev.sent("u2", T0 + 1, "app.pay")])
    snap = model.snapshot()
    assert snap.lifecycle["task-sent"] == {
        ("report.0", "default"): 1, ("report.1", "default"): 1, ("other", "default"): 3,
        ("app.add", "default"): 1, ("app.pay", "default"): 1}
    assert snap.task_names_folded == 3
    assert [r.getMessage()[:43] for r in caplog.records if "folded" in r.getMessage()] == [
        'task names folded into name="other" total=1']  # once, then at most every 5 min


def test_without_registered_names_the_cap_is_first_come_first_served(make_model, ev) -> None:
    model = make_model(max_task_names=2)
    model.process_many([ev.sent(f"j{i}", T0, f"report.{i}") for i in range(3)])
    assert model.snapshot().lifecycle["task-sent"] == {
        ("report.0", "default"): 1, ("report.1", "default"): 1, ("other", "default"): 1}
