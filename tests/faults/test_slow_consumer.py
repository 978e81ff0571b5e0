"""A slow consumer on Redis: Redis drops a pub/sub client whose output buffer passes
``client-output-buffer-limit pubsub``; the exporter notices, says events were lost, counts one
gap and one reconnect, and counts exactly again afterwards.

The exporter is made slow for real: SIGSTOP while replayed Celery events (rendered once through
Celery's dispatcher, see ``benchmarks/eventload.py``) are published, then SIGCONT.
"""

from __future__ import annotations

import os
import signal
import sys

import pytest

from tests.support.exporter import QUIET_POLLER, log_lines
from tests.support.paths import ROOT
from tests.support.waiting import assert_stays, wait_for

sys.path.insert(0, str(ROOT / "benchmarks"))
from eventload import pattern_subscribers, render, replay, with_new_ids  # noqa: E402

pytestmark = pytest.mark.integration
SMALL_LIMIT = "pubsub 256kb 128kb 1"


def _received(exporter) -> dict[str, float]:
    metrics = exporter.metrics()
    return {s["type"]: metrics.value("celery_jobmon_events_received_total", **s)
            for s in metrics.series("celery_jobmon_events_received_total")}


def _publish_copy(server, template, copy: int, db: int = 0) -> None:
    """Publish the template once more with task ids of their own (``copy``), 500 at a time."""
    pipe = server.client().pipeline(transaction=False)
    for n, (suffix, data) in enumerate(with_new_ids(template, copy), 1):
        pipe.publish(f"/{db}.{suffix}", data)
        if n % 500 == 0:
            pipe.execute()
    pipe.execute()


def test_disconnected_slow_pubsub_client_counts_one_gap_and_resumes(private_redis,
                                                                      start_exporter):
    server = private_redis("--client-output-buffer-limit", SMALL_LIMIT)
    template = render(server, tasks=1000)  # 4,000 events, about 3 MB of pub/sub payloads
    events_per_copy = sum(template.by_type.values())
    exporter = start_exporter(server.url(0), "--no-history", "--reconnect-max-interval", "1s",
                              "--no-enable-events", *QUIET_POLLER)
    wait_for(lambda: pattern_subscribers(server) == 1, 10, message="exporter subscribed")

    os.kill(exporter.proc.pid, signal.SIGSTOP)
    try:
        replay(server, 0, template, copies=4)  # ~12 MB: past the socket buffers and 256 kB
        wait_for(lambda: pattern_subscribers(server) == 0, 10,
                 message="Redis closing the stopped subscriber")
    finally:
        os.kill(exporter.proc.pid, signal.SIGCONT)

    wait_for(lambda: exporter.metrics().value("celery_jobmon_broker_reconnects_total") == 1, 20,
             message=lambda: f"reconnect\n{exporter.output()[-3000:]}")
    metrics = exporter.metrics()
    assert metrics.value("celery_jobmon_event_gaps_total") == 1
    assert metrics.value("celery_jobmon_broker_connected") == 1
    lost = metrics.total("celery_jobmon_events_received_total")
    assert 0 < lost < 4 * events_per_copy  # what was read before the cut; the rest is gone
    warnings = log_lines(exporter.output(), r"level=WARNING .*broker connection lost")
    assert len(warnings) == 1
    assert "events published until the reconnect are lost" in warnings[0]
    assert "client-output-buffer-limit pubsub" in warnings[0]

    # Counting resumes exactly: one more copy (new task ids), published at a pace it keeps up
    # with, gives exactly its events.
    before = _received(exporter)
    _publish_copy(server, template, copy=100)
    expected = {t: before.get(t, 0) + n for t, n in template.by_type.items()}
    wait_for(lambda: _received(exporter) == expected, 30,
             message=f"exact counts after the gap: {expected}")
    assert_stays(lambda: _received(exporter) == expected, 1.0,
                 message=f"exact counts after the gap: {expected}")
    metrics = exporter.metrics()
    assert _received(exporter) == expected
    assert metrics.value("celery_jobmon_event_gaps_total") == 1
    assert metrics.value("celery_jobmon_broker_reconnects_total") == 1
    assert exporter.proc.poll() is None
