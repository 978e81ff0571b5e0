"""`serve --const-label`: a real exporter labels every series it exposes, from every source
(task events, the exporter itself, queue reads, the history writer, the scrape report); the
environment variable takes several, separated by spaces."""

from __future__ import annotations

import pytest

from tests.support.exporter import Exporter
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration
ADD = "examples.tasks.add"


def test_every_series_of_a_real_exporter_carries_the_const_labels(redis_url, producer,
                                                                   monkeypatch):
    monkeypatch.setenv("JOBMON_CONST_LABEL", "cluster=eu-1 zone=a")
    exporter = Exporter(redis_url, "--queue", "a")  # no worker: the message waits in a
    try:
        exporter.wait_ready()
        producer(redis_url).send_task(ADD, (1, 2), queue="a")
        metrics = wait_for(lambda: (found := exporter.metrics()).total(
            "celery_task_sent_total", name=ADD) == 1
            and found.total("celery_queue_length", queue_name="a") == 1 and found, 30,
            message=lambda: f"a task sent and its queue read\n{exporter.output()}")
        for name in ("celery_task_sent_total", "celery_task_runtime_seconds_bucket",
                     "celery_jobmon_build_info", "celery_jobmon_broker_connected",
                     "celery_queue_length", "celery_jobmon_poll_age_seconds",
                     "celery_jobmon_history_rows_written_total",
                     "celery_jobmon_scrape_collector_success"):
            assert metrics.series(name), name
        unlabelled = [(name, labels) for name in metrics.samples
                      for labels in metrics.series(name)
                      if (labels.get("cluster"), labels.get("zone")) != ("eu-1", "a")]
        assert unlabelled == []
    finally:
        exporter.stop()
