"""Series of tasks warmed from the history at start are born at 0, like a live first sighting.

Before: a task running across an exporter restart came back from the history as running, but
its ``succeeded``/``failed``/``retried``/``lost`` counters and its histograms did not exist, so
its failure made ``failed_total`` appear directly at 1 — invisible to ``increase()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from exporter.history import UnfinishedTask
from exporter.state.labels import TaskLabels, WorkerTaskLabels
from exporter.state.model import Model, ModelSnapshot
from tests.support.clock import T0
from tests.support.events import WORKER, Events

NAME, QUEUE = "app.slow_fail", "b"
#: The families a first sighting creates at 0 (the lifecycle counter of the event itself aside).
BORN = ("task-succeeded", "task-failed", "task-retried")


def warmed(state: str, hostname: str | None = WORKER) -> UnfinishedTask:
    """An execution as the history hands it back at start, in ``state``."""
    received = T0 - 4 if state != "PENDING" else None
    started = T0 - 3 if state == "STARTED" else None
    return UnfinishedTask("w", NAME, QUEUE, QUEUE, hostname, state, T0 - 5, received, started,
                          None, 0)


def births(snap: ModelSnapshot) -> dict[str, Any]:
    """What a snapshot holds of the families a first sighting creates: counters by labels,
    histograms as ``{labels: count}``.
    """
    return {
        **{t: dict(snap.lifecycle[t]) for t in BORN},
        "lost": dict(snap.lost),
        "runtime": {k: v.count for k, v in snap.runtime.items()},
        "queue_wait": {k: v.count for k, v in snap.queue_wait.items()},
    }


@pytest.mark.parametrize("state", ["PENDING", "RECEIVED", "STARTED"])
@pytest.mark.parametrize("hostname_label", [False, True])
def test_a_warmed_task_has_its_series_born_at_0_and_its_first_failure_counts_from_there(
        make_model: Callable[..., Model], ev: Events, state: str, hostname_label: bool):
    model = make_model(hostname_label=hostname_label)
    assert model.warm([warmed(state)]) == 1
    labels = WorkerTaskLabels(NAME, QUEUE, WORKER) if hostname_label \
        else TaskLabels(NAME, QUEUE)
    zero = {labels: 0}
    assert births(model.snapshot()) == {
        "task-succeeded": zero, "task-failed": zero, "task-retried": zero, "lost": zero,
        "runtime": {labels.with_state("SUCCESS"): 0, labels.with_state("FAILURE"): 0},
        "queue_wait": zero,
    }
    model.process_many([ev.failed("w", T0 + 10)], received_at=T0 + 10)
    snap = model.snapshot()
    assert snap.lifecycle["task-failed"] == {labels: 1}
    assert snap.lifecycle["task-succeeded"] == zero
    assert {k: v.count for k, v in snap.runtime.items()} == {
        labels.with_state("SUCCESS"): 0, labels.with_state("FAILURE"): int(state == "STARTED")}


@pytest.mark.parametrize("hostname_label", [False, True])
def test_a_warmed_task_is_born_with_what_its_task_received_births_live(
        make_model: Callable[..., Model], ev: Events, hostname_label: bool):
    live = make_model(hostname_label=hostname_label)
    live.process_many([ev.sent("w", T0 - 5, NAME, queue=QUEUE), ev.received("w", T0 - 4, NAME)],
                      received_at=T0 - 4)
    restarted = make_model(hostname_label=hostname_label)
    restarted.warm([warmed("RECEIVED")])
    assert births(restarted.snapshot()) == births(live.snapshot())


def test_a_warmed_task_only_sent_births_nothing_under_the_hostname_label(
        make_model: Callable[..., Model], ev: Events):
    # As task-sent live: no worker has it yet, so no (name, queue, hostname) to key them by.
    model = make_model(hostname_label=True)
    model.warm([warmed("PENDING", hostname=None)])
    live = make_model(hostname_label=True)
    live.process_many([ev.sent("w", T0 - 5, NAME, queue=QUEUE)], received_at=T0 - 5)
    assert births(model.snapshot()) == births(live.snapshot()) == {
        **{t: {} for t in BORN}, "lost": {}, "runtime": {}, "queue_wait": {}}
