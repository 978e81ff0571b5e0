"""A subscriber Redis drops for its output buffer, repaired: the exporter is frozen while a real
worker runs tasks whose events are large (each failure's traceback carries a 100 kB message),
Redis disconnects it at its ``client-output-buffer-limit pubsub`` (made small with CONFIG SET),
and after it resumes the gap is counted, the lost ``task-started`` events are counted for the
worker, and the counters and history rows are exact again from the Redis result backend.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import pytest
from celery import Celery

from tests.faults.test_lost_events_repaired import (
    ADD,
    FAIL,
    HELD,
    REPAIR,
    _release,
    _rows,
    _started_seen,
    _wait_repaired_exactly,
)
from tests.support.exporter import Exporter
from tests.support.redis_server import PrivateRedis
from tests.support.waiting import wait_for
from tests.support.worker import Worker

pytestmark = pytest.mark.integration
#: Hard limit 256 kB, or 64 kB for 1 s (Redis' default for pub/sub: 32 MB, or 8 MB for 60 s).
SMALL_LIMIT = "pubsub 256kb 64kb 1"
#: Held tasks of each kind. The failures' task-failed events carry their traceback, whose last
#: line is the 100 kB message: ~7 MB of events on the frozen subscriber's connection, past its
#: socket buffers and the limit. Their task-sent events are small (Celery cuts the argument
#: repr to 1 kB), so the exporter reads them at its ordinary pace.
EACH = 50
MESSAGE = "x" * 100_000


def _pattern_subscribers(server: PrivateRedis) -> set[str]:
    """Ids of the clients holding a PSUBSCRIBE: the exporter's event receiver, and the
    worker's broadcast consumer (kombu's fanout patterns)."""
    return {c["id"] for c in server.client().client_list() if int(c.get("psub", 0))}



def test_a_subscriber_dropped_by_the_output_buffer_limit_is_repaired_exactly(
        private_redis, producer: Callable[[str], Celery], start_exporter, start_worker):
    server = private_redis()
    server.client().config_set("client-output-buffer-limit", SMALL_LIMIT)
    url, backend = server.url(0), server.url(1)
    exporter: Exporter = start_exporter(url, "--result-backend", backend, *REPAIR)
    subscriber = wait_for(lambda: _pattern_subscribers(server), 10,
                          message="exporter subscribed")
    worker: Worker = start_worker(url, "a", env={"CELERY_RESULT_BACKEND": backend,
                                                 "CELERY_RESULT_EXTENDED": "1"})
    wait_for(lambda: exporter.metrics().value("celery_worker_up", hostname=worker.hostname) == 1,
             60, message="worker up")
    app = producer(url)
    sent = {app.send_task(ADD, (i, 1), queue=HELD).id: ADD for i in range(EACH)}
    sent.update({app.send_task(FAIL, (MESSAGE,), queue=HELD).id: FAIL for _ in range(EACH)})
    wait_for(lambda: exporter.metrics().total("celery_task_sent_total", queue_name=HELD)
             == 2 * EACH, 30, message="the held tasks seen sent")

    os.kill(exporter.proc.pid, signal.SIGSTOP)
    try:
        _release(app, worker, 2 * EACH)
        wait_for(lambda: not subscriber & _pattern_subscribers(server), 20,
                 message="Redis dropping the frozen subscriber at its output buffer limit")
    finally:
        os.kill(exporter.proc.pid, signal.SIGCONT)

    held_add, held_fail = {"name": ADD, "queue_name": HELD}, {"name": FAIL, "queue_name": HELD}
    metrics = _wait_repaired_exactly(exporter, worker, EACH, EACH)
    missed = metrics.value("celery_worker_missed_task_events_total", hostname=worker.hostname)
    repairs = metrics.total("celery_jobmon_repairs_total", source="result_backend")
    ended_by_events = sum(metrics.value("celery_jobmon_events_received_total", type=t) or 0
                          for t in ("task-succeeded", "task-failed"))
    print(f"\noutput buffer drop: {2 * EACH} tasks, task-started seen {_started_seen(metrics):.0f}"
          f", missed {missed:.0f}, ended by events {ended_by_events:.0f}, repaired {repairs:.0f}")
    assert metrics.value("celery_jobmon_event_gaps_total") == 1
    assert missed is not None and missed > 0  # the drop lost events for real
    # Each task counted once: by its own end event or by a repair, never both.
    assert ended_by_events + repairs == 2 * EACH
    assert repairs >= missed  # a start that arrived may have lost its end
    for family, count in (("sent", EACH), ("received", EACH), ("started", EACH)):
        assert metrics.value(f"celery_task_{family}_total", **held_add) == count, family
        assert metrics.value(f"celery_task_{family}_total", **held_fail) == count, family
    assert metrics.value("celery_task_failed_total", **held_add) == 0
    assert metrics.value("celery_task_succeeded_total", **held_fail) == 0
    assert metrics.value("celery_task_exceptions_total", name=FAIL, exception="ValueError") == EACH
    assert metrics.value("celery_jobmon_repair_unresolved_tasks") == 0
    assert metrics.total("celery_jobmon_repairs_total", source="workers") == 0

    rows = wait_for(lambda: (r := _rows(exporter.history_url)) and sum(
        row["state_source"] == "result_backend" for row in r.values()) == repairs and r, 30,
        message="repaired rows written")
    assert sorted(rows) == sorted(sent)
    assert sorted((row["name"], row["state"]) for row in rows.values()) == sorted(
        [(ADD, "SUCCESS")] * EACH + [(FAIL, "FAILURE")] * EACH)
    assert sum(row["state_source"] == "events" for row in rows.values()) == ended_by_events
