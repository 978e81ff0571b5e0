"""A fixed scenario through a real broker, a real worker and a real `celery-jobmon serve`.

7 successes on queue a, 3 failures with two exception types on queue b, one task that retries
twice then succeeds, one task revoked before it starts. Run on Redis and on RabbitMQ; every
value in `/metrics` is asserted exactly.
"""

from __future__ import annotations

import pytest

from tests.support.exporter import Metrics
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

ADD = "examples.tasks.add"
FAIL_VALUE = "examples.tasks.fail_value"
FAIL_KEY = "examples.tasks.fail_key"
FLAKY = "examples.tasks.flaky"
SLEEP = "examples.tasks.sleep"

#: (name, queue) → (sent, received, started, succeeded, failed, retried, revoked)
EXPECTED = {
    (ADD, "a"): (7, 7, 7, 7, 0, 0, 0),
    (FAIL_VALUE, "b"): (2, 2, 2, 0, 2, 0, 0),
    (FAIL_KEY, "b"): (1, 1, 1, 0, 1, 0, 0),
    (FLAKY, "a"): (3, 3, 3, 1, 0, 2, 0),
    (SLEEP, "a"): (1, 1, 0, 0, 0, 0, 1),
}
COUNTERS = ("sent", "received", "started", "succeeded", "failed", "retried", "revoked")


def _finished(metrics: Metrics) -> bool:
    return (
        metrics.value("celery_task_succeeded_total", name=FLAKY, queue_name="a") == 1
        and metrics.value("celery_task_succeeded_total", name=ADD, queue_name="a") == 7
        and metrics.value("celery_task_failed_total", name=FAIL_VALUE, queue_name="b") == 2
        and metrics.value("celery_task_failed_total", name=FAIL_KEY, queue_name="b") == 1
        and metrics.value("celery_task_revoked_total", name=SLEEP, queue_name="a") == 1
    )


def _counted(metrics: Metrics) -> dict[str, dict[str, float | None]]:
    """Every task counter by label set, for a failure's message."""
    return {step: {str(labels): metrics.value(f"celery_task_{step}_total", **labels)
                   for labels in metrics.series(f"celery_task_{step}_total")}
            for step in COUNTERS}


def test_scenario_metrics_are_exact(broker_url, producer, start_exporter, start_worker):
    exporter = start_exporter(broker_url)
    worker = start_worker(broker_url)
    wait_for(lambda: exporter.metrics().value("celery_worker_up", hostname=worker.hostname) == 1,
             60, message=lambda: f"worker up\n{worker.output()}")

    app = producer(broker_url)
    for i in range(7):
        app.send_task(ADD, (i, i), queue="a")
    app.send_task(FAIL_VALUE, ("bad amount",), queue="b")
    app.send_task(FAIL_VALUE, ("bad currency",), queue="b")
    app.send_task(FAIL_KEY, ("customer",), queue="b")
    app.send_task(FLAKY, (2,), queue="a")
    # Revoked before it starts: the worker holds it until its ETA; revoke once it is received.
    doomed = app.send_task(SLEEP, (0,), queue="a", countdown=4)
    wait_for(lambda: exporter.metrics().value(
        "celery_task_received_total", name=SLEEP, queue_name="a") == 1, 30,
        message="countdown task received")
    app.control.revoke(doomed.id)

    metrics = wait_for(lambda: (m := exporter.metrics()) and _finished(m) and m, 60,
                       message=lambda: f"scenario done: {_counted(exporter.metrics())}\n"
                                       f"{exporter.output()[-3000:]}")
    # Let stray late events arrive, then read once more: exact values must still hold.
    metrics = wait_for(lambda: exporter.metrics(), 5)

    for (name, queue), values in EXPECTED.items():
        for counter, expected in zip(COUNTERS, values, strict=True):
            got = metrics.value(f"celery_task_{counter}_total", name=name, queue_name=queue)
            # sent/received/started/... exist only once seen; succeeded/failed/retried from the
            # start.
            if expected == 0 and counter not in ("succeeded", "failed", "retried"):
                assert got is None, (counter, name, got)
            else:
                assert got == expected, (counter, name, queue, got)

    assert metrics.value("celery_task_exceptions_total", name=FAIL_VALUE,
                         exception="ValueError") == 2
    assert metrics.value("celery_task_exceptions_total", name=FAIL_KEY,
                         exception="KeyError") == 1
    assert len(metrics.series("celery_task_exceptions_total")) == 2

    runtime = "celery_task_runtime_seconds_count"
    assert metrics.value(runtime, name=ADD, queue_name="a", state="SUCCESS") == 7
    assert metrics.value(runtime, name=FLAKY, queue_name="a", state="SUCCESS") == 1
    assert metrics.value(runtime, name=FAIL_VALUE, queue_name="b", state="FAILURE") == 2
    assert metrics.value(runtime, name=FAIL_KEY, queue_name="b", state="FAILURE") == 1
    # Histograms exist at 0 from a pair's first sighting: 4 observed, the others empty.
    observed = [s for s in metrics.series(runtime) if metrics.value(runtime, **s)]
    assert len(observed) == 4

    wait = "celery_task_queue_wait_seconds_count"
    assert metrics.value(wait, name=ADD, queue_name="a") == 7
    assert metrics.value(wait, name=FLAKY, queue_name="a") == 3
    assert metrics.value(wait, name=FAIL_VALUE, queue_name="b") == 2
    assert metrics.value(wait, name=FAIL_KEY, queue_name="b") == 1
    assert metrics.value(wait, name=SLEEP, queue_name="a") == 0  # revoked before it started

    for name, queue in EXPECTED:
        if (name, queue) != (SLEEP, "a"):
            assert metrics.value("celery_task_running", name=name, queue_name=queue) == 0

    assert metrics.value("celery_worker_up", hostname=worker.hostname) == 1
    assert metrics.value("celery_jobmon_broker_connected") == 1
    assert metrics.value("celery_jobmon_events_received_total", type="task-sent") == 14
    assert metrics.value("celery_jobmon_events_received_total", type="task-failed") == 3
    assert metrics.value("celery_jobmon_events_received_total", type="task-retried") == 2
    assert metrics.series("celery_jobmon_events_malformed_total") == []

    # No label value is ever the string None or a guessed queue.
    for series in metrics.samples.values():
        for labels in series:
            values = dict(labels)
            assert "None" not in values.values(), values
            if "queue_name" in values:
                assert values["queue_name"] in ("a", "b"), values
