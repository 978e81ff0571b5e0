"""Broker outages: the exporter keeps serving, reconnects with capped backoff, counts the
reconnect and the event gap exactly once, and counts tasks exactly again afterwards.

Redis: a private ``redis-server`` is SIGKILLed and started again ``OUTAGE_SECONDS`` later.
RabbitMQ: the shared broker stays up; the exporter alone reaches it through a :class:`TcpProxy`
that is cut and restored. Only the exporter goes through the proxy because it is the exporter's
behaviour under test: the worker and the producer keep working, so the tasks that run during the
outage are a known quantity — their events are lost to the exporter (its auto-delete event queue
goes with its connection), which the test asserts as exactly that gap.
"""

from __future__ import annotations

import os
import re
import time

import pytest

from tests.support.exporter import log_lines
from tests.support.network import TcpProxy
from tests.support.waiting import assert_stays, wait_for

pytestmark = pytest.mark.integration
ADD = "examples.tasks.add"
#: --reconnect-max-interval of the exporters here: the backoff cap the tests check.
CAP = 2.0
#: How long the outages last, seconds: ``JOBMON_FAULT_OUTAGE_SECONDS``, 30 by default.
OUTAGE_SECONDS = float(os.environ.get("JOBMON_FAULT_OUTAGE_SECONDS", "30"))


def _succeeded(exporter, queue: str = "a") -> float | None:
    return exporter.metrics().value("celery_task_succeeded_total", name=ADD, queue_name=queue)


def _counted(exporter) -> dict[str, dict[str, float | None]]:
    """The task counters by event type and label set, for a failure's message."""
    metrics = exporter.metrics()
    return {step: {str(labels): metrics.value(f"celery_task_{step}_total", **labels)
                   for labels in metrics.series(f"celery_task_{step}_total")}
            for step in ("sent", "received", "started", "succeeded")}


#: The longest one probe's three calls may take during an outage: an endpoint that waited on
#: the broker (a connect timeout, a reconnect backoff) would take many seconds.
PROBE_MAX_SECONDS = 2.0


def _probe_during(exporter, seconds: float) -> list[tuple[int, int, int, float]]:
    """Probe /healthz, /readyz and /metrics every 0.5 s for ``seconds``: (status codes,
    broker_connected). Fails at once if one probe takes longer than :data:`PROBE_MAX_SECONDS`."""
    probes = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.monotonic()
        health = exporter.get("/healthz").status_code
        ready = exporter.get("/readyz").status_code
        metrics = exporter.get("/metrics")
        connected = float(re.search(r"^celery_jobmon_broker_connected (\S+)$", metrics.text,
                                    re.M).group(1)) if metrics.status_code == 200 else -1.0
        probes.append((health, ready, metrics.status_code, connected))
        took = time.monotonic() - started
        assert took < PROBE_MAX_SECONDS, f"a probe took {took:.1f}s during the outage"
        time.sleep(0.5)
    return probes


def _backoff_waits(output: str) -> list[float]:
    return [float(m) for line in log_lines(output, "broker unreachable")
            for m in re.findall(r"retry_in=(\d+)s", line)]


def _resume_report(exporter, worker) -> str:
    missed = exporter.metrics().total("celery_worker_missed_task_events_total")
    return (f"counting resumed (succeeded {_succeeded(exporter)}, task-started missed by the "
            f"heartbeats' count: {missed})\n{worker.output()[-3000:]}\n"
            f"{exporter.output()[-3000:]}")


def test_redis_killed_for_the_outage_then_restarted(redis_server, producer, start_exporter,
                                                    start_worker):
    url = redis_server.url()
    exporter = start_exporter(url, "--reconnect-max-interval", f"{CAP:g}s",
                              "--inspect-interval", "1s")
    worker = start_worker(url, "a")
    wait_for(lambda: exporter.metrics().value("celery_worker_up", hostname=worker.hostname) == 1,
             60, message=lambda: f"worker up\n{worker.output()}")
    # The poller has the worker's queues: a task-received that overtakes its task-sent (the
    # producer's event) still knows its queue (else it counts under queue_name="unknown").
    wait_for(lambda: exporter.metrics().value("celery_worker_pool_size",
                                              hostname=worker.hostname) == 2, 30,
             message="the poller knows the worker")
    app = producer(url)
    for i in range(3):
        app.send_task(ADD, (i, i), queue="a")
    wait_for(lambda: _succeeded(exporter) == 3, 30, message="three tasks before the outage")
    metrics = exporter.metrics()
    assert (metrics.value("celery_jobmon_broker_reconnects_total"),
            metrics.value("celery_jobmon_event_gaps_total")) == (0, 0)

    redis_server.kill()
    wait_for(lambda: exporter.metrics().value("celery_jobmon_broker_connected") == 0, 10,
             message="disconnect noticed")
    probes = _probe_during(exporter, OUTAGE_SECONDS)
    assert len(probes) >= OUTAGE_SECONDS / (0.5 + PROBE_MAX_SECONDS)
    assert set(probes) == {(200, 503, 200, 0.0)}

    redis_server.start()
    restarted = time.monotonic()
    wait_for(lambda: exporter.metrics().value("celery_jobmon_broker_connected") == 1, 30,
             message=lambda: f"reconnect\n{exporter.output()[-3000:]}")
    # The backoff is capped: the next attempt comes within CAP seconds of the restart.
    assert time.monotonic() - restarted < CAP + 2.0
    waits = _backoff_waits(exporter.output())
    assert max(waits) == CAP and waits[:2] == [1.0, 2.0]
    assert OUTAGE_SECONDS / CAP - 2 <= len(waits) <= OUTAGE_SECONDS + 2
    assert len(log_lines(exporter.output(), r"broker connection lost .*events published until "
                                            r"the reconnect are lost")) == 1
    assert exporter.get("/readyz").status_code == 200

    # The worker reconnects by itself (Celery's own backoff); counting resumes, exactly, once
    # it answers a ping again (worker_up may still be 1 from before the outage while the
    # worker's own connection is down).
    app = producer(url)
    wait_for(lambda: app.control.ping(destination=[worker.hostname], timeout=1.0), 60,
             message=lambda: f"worker back\n{worker.output()[-3000:]}")
    for i in range(4):
        app.send_task(ADD, (i, i), queue="a")
    wait_for(lambda: _succeeded(exporter) == 7, 60,
             message=lambda: _resume_report(exporter, worker))
    assert_stays(lambda: _succeeded(exporter) == 7, 1.0, message="7 successes, no more")
    metrics = exporter.metrics()
    assert metrics.value("celery_task_sent_total", name=ADD, queue_name="a") == 7
    assert metrics.value("celery_task_succeeded_total", name=ADD, queue_name="a") == 7
    assert metrics.value("celery_task_running", name=ADD, queue_name="a") == 0
    assert metrics.value("celery_jobmon_broker_reconnects_total") == 1
    assert metrics.value("celery_jobmon_event_gaps_total") == 1
    assert exporter.proc.poll() is None


def test_rabbitmq_connection_cut_then_restored(amqp_url, producer, start_exporter,
                                               start_worker):
    proxy = TcpProxy(upstream=("127.0.0.1", 5672))
    proxy.start()
    via_proxy = amqp_url.replace("127.0.0.1:5672", f"127.0.0.1:{proxy.port}")
    try:
        exporter = start_exporter(via_proxy, "--reconnect-max-interval", f"{CAP:g}s",
                                  "--inspect-interval", "1s")
        worker = start_worker(amqp_url, "a")
        wait_for(lambda: exporter.metrics().value("celery_worker_up",
                                                  hostname=worker.hostname) == 1,
                 60, message=lambda: f"worker up\n{worker.output()}")
        # The poller has the worker's queues: a task-received that overtakes its task-sent (the
        # producer's event) still knows its queue (else it counts under queue_name="unknown").
        wait_for(lambda: exporter.metrics().value("celery_worker_pool_size",
                                                  hostname=worker.hostname) == 2, 30,
                 message="the poller knows the worker")
        app = producer(amqp_url)
        for i in range(3):
            app.send_task(ADD, (i, i), queue="a")
        wait_for(lambda: _succeeded(exporter) == 3, 30,
                 message=lambda: f"three tasks before the outage: {_counted(exporter)}\n"
                                 f"exporter:\n{exporter.output()[-3000:]}\n"
                                 f"worker:\n{worker.output()[-3000:]}")

        proxy.close()
        wait_for(lambda: exporter.metrics().value("celery_jobmon_broker_connected") == 0, 10,
                 message="disconnect noticed")
        # Tasks that run while the exporter is cut off: their events are lost to it.
        during = [app.send_task(ADD, (i, i), queue="a") for i in range(2)]
        probes = _probe_during(exporter, OUTAGE_SECONDS)
        assert len(probes) >= OUTAGE_SECONDS / (0.5 + PROBE_MAX_SECONDS)
        assert set(probes) == {(200, 503, 200, 0.0)}
        assert all(f"[{r.id}] succeeded" in worker.output() for r in during)

        proxy.start()
        restarted = time.monotonic()
        wait_for(lambda: exporter.metrics().value("celery_jobmon_broker_connected") == 1, 30,
                 message=lambda: f"reconnect\n{exporter.output()[-3000:]}")
        assert time.monotonic() - restarted < CAP + 2.0
        waits = _backoff_waits(exporter.output())
        assert waits and max(waits) == CAP
        assert len(log_lines(exporter.output(), r"broker connection lost .*events published "
                                                r"until the reconnect are lost")) == 1

        for i in range(3):
            app.send_task(ADD, (i, i), queue="a")
        wait_for(lambda: _succeeded(exporter) == 6, 30, message=lambda: f"counting resumed\n"
                                                             f"{exporter.output()[-3000:]}")
        assert_stays(lambda: _succeeded(exporter) == 6, 1.0, message="6 successes, no more")
        metrics = exporter.metrics()
        # 3 before + 3 after; the 2 that ran during the outage are the gap.
        assert metrics.value("celery_task_sent_total", name=ADD, queue_name="a") == 6
        assert metrics.value("celery_task_succeeded_total", name=ADD, queue_name="a") == 6
        assert metrics.value("celery_jobmon_broker_reconnects_total") == 1
        assert metrics.value("celery_jobmon_event_gaps_total") == 1
        assert exporter.proc.poll() is None
    finally:
        proxy.close()
