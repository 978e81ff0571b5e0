"""The exporter's own health: connection state, gaps, batches and poll errors, kept apart from
the model; what the consumer records in it; what /readyz reads from it."""

from __future__ import annotations

import re

from celery import Celery
from starlette.testclient import TestClient

from exporter.events.consumer import EventConsumer
from exporter.http import create_http_app
from exporter.state.health import Health, HealthSnapshot
from exporter.state.model import Model
from tests.support.clock import T0, FakeClock

BUILD = {"version": "1", "celery_version": "5", "python_version": "3"}


def test_a_new_health_is_disconnected_and_counts_nothing() -> None:
    assert Health(build=BUILD).snapshot() == HealthSnapshot(
        broker_connected=False, broker_reconnects=0, event_gaps=0, event_batches=0,
        event_processing_seconds=0.0, poll_errors={}, build=BUILD)


def test_reconnects_gaps_and_poll_errors_are_counted() -> None:
    health = Health()
    health.set_broker_connected(True)
    health.set_broker_connected(False)
    health.set_broker_connected(True, reconnected=True)
    health.count_poll_error("active_queues")
    health.count_poll_error("active_queues")
    health.count_poll_error("enable_events")
    snap = health.snapshot()
    assert (snap.broker_connected, snap.broker_reconnects) == (True, 1)
    # Losing the consuming connection once: one gap in the event stream.
    assert snap.event_gaps == 1
    assert snap.poll_errors == {"active_queues": 2, "enable_events": 1}


def test_a_problem_is_shown_for_ten_minutes_after_it_was_last_reported_by_the_clock():
    # The injected clock, not the machine's (before: time.time(), so this saw no problem).
    clock = FakeClock()
    health = Health(clock=clock)
    health.report_problem("content_disallowed", "pickle events refused")
    assert health.problems() == {"content_disallowed": ("pickle events refused", T0)}
    clock.advance(600)
    assert health.problems() == {"content_disallowed": ("pickle events refused", T0)}
    clock.advance(0.1)
    assert health.problems() == {}


def test_losing_a_connection_that_never_consumed_is_no_gap() -> None:
    health = Health()
    health.set_broker_connected(False)
    health.set_broker_connected(False)
    assert health.snapshot().event_gaps == 0


def test_the_consumer_counts_each_batch_it_applies_and_the_time_it_took(make_model, ev) -> None:
    model: Model = make_model()
    health = Health()
    consumer = EventConsumer(Celery(broker="redis://127.0.0.1:1/0", set_as_current=False),
                             model, health, accept=("json",), reconnect_max_interval=1.0)
    consumer.apply([ev.sent("u1", 1_700_000_000.0, "app.add")])
    consumer.apply([ev.sent("u2", 1_700_000_000.0, "app.add"), "not an event"])
    snap = health.snapshot()
    assert snap.event_batches == 2
    assert snap.event_processing_seconds > 0.0
    assert model.snapshot().lifecycle["task-sent"] == {("app.add", "default"): 2}


def test_readyz_answers_from_the_health_alone() -> None:
    health = Health()
    client = TestClient(create_http_app(None, health))
    assert (client.get("/readyz").status_code, client.get("/readyz").json()) == (
        503, {"status": "broker disconnected"})
    health.set_broker_connected(True)
    assert (client.get("/readyz").status_code, client.get("/readyz").json()) == (
        200, {"status": "ready"})


def test_the_root_lists_the_endpoints_or_opens_the_job_browser() -> None:
    page = TestClient(create_http_app(lambda: b"", Health())).get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert re.findall(r'href="([^"]+)"', page.text) == ["/metrics", "/healthz", "/readyz"]

    async def ui(scope, receive, send) -> None:
        raise AssertionError("not reached")

    root = TestClient(create_http_app(None, Health(), ui=ui)).get("/", follow_redirects=False)
    assert (root.status_code, root.headers["location"]) == (307, "/ui/")


def test_the_root_lists_the_endpoints_when_the_job_browser_is_off() -> None:
    # What `serve` mounts without --ui-users-file: the 403 app. Going there helps nobody.
    from exporter.config import Settings
    from ui.app import ui_from_settings

    off = ui_from_settings(Settings(), None)  # type: ignore[arg-type]
    root = TestClient(create_http_app(lambda: b"", Health(), ui=off)).get(
        "/", follow_redirects=False)
    assert root.status_code == 200 and root.headers["content-type"].startswith("text/html")
    assert re.findall(r'href="([^"]+)"', root.text) == ["/metrics", "/healthz", "/readyz"]
    assert "job browser is off" in root.text and "--ui-users-file" in root.text


def test_readyz_lists_failing_history_writes_as_a_problem_and_stays_ready() -> None:
    # Metrics are unaffected by the history, as by the other problems: 200, with the problem.
    from exporter.history.writer import HistoryStats

    stats = {"failures": 4}
    health = Health()
    health.set_broker_connected(True)
    client = TestClient(create_http_app(None, health, history=lambda: HistoryStats(
        events_accepted=9, rows_written=2, write_errors=5, queue_depth=0, pending_rows=7,
        dropped={}, last_write_ts=T0, consecutive_failures=stats["failures"], rows_pruned=0,
        prune_errors=0)))
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    [problem] = ready.json()["problems"]
    assert (problem["condition"], problem["detail"]) == ("history_writes", (
        "history writes are failing (4 attempts in a row; last written 2023-11-14T22:13:20+00:00):"
        " 7 rows wait in memory and are retried with backoff, events beyond "
        "--history-queue-size are dropped. The log's `history write failed` (or `history "
        "writer process exited`) lines say why; "
        "metrics are unaffected"))
    stats["failures"] = 0
    assert client.get("/readyz").json() == {"status": "ready"}
