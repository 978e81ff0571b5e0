"""/metrics with one source failing: the others still answer, the failure is a 0 in
celery_jobmon_scrape_collector_success, never a 500 (before: a raising collector turned the
whole scrape into a 500)."""

from __future__ import annotations

import logging

from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from exporter.http import MetricsEndpoint, create_http_app
from exporter.metrics.scrape import Scrape, exporter_sources
from exporter.poll.snapshot import PollSnapshot
from exporter.state.health import Health

T0 = 1_700_000_000.0


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def success(values: dict, collector: str) -> float:
    return values[("celery_jobmon_scrape_collector_success", (("collector", collector),))]


def test_a_failing_poll_source_leaves_the_others_and_reports_0(make_model, ev, caplog) -> None:
    model = make_model()
    model.process_many([ev.sent("u1", T0, "app.add")])

    def broken() -> PollSnapshot | None:
        raise RuntimeError("a snapshot the readers cannot read")

    health = Health()
    scrape = Scrape(exporter_sources("celery_", model, health, broken, None), "celery_")
    client = TestClient(create_http_app(MetricsEndpoint(scrape.render), health))
    with caplog.at_level(logging.ERROR, logger="exporter.metrics.scrape"):
        response = client.get("/metrics")
        client.get("/metrics")
    assert response.status_code == 200
    values = samples(response.text)
    assert values[("celery_task_sent_total", (("name", "app.add"), ("queue_name", "default")))] \
        == 1.0
    assert values[("celery_jobmon_broker_connected", ())] == 0.0
    assert values[("celery_jobmon_history_enabled", ())] == 0.0
    assert [success(values, c) for c in ("model", "health", "poll", "history")] == [
        1.0, 1.0, 0.0, 1.0]
    assert {name for name, _ in values} >= {"celery_jobmon_scrape_collector_duration_seconds"}
    # Logged once with its traceback, not at every scrape.
    failures = [r for r in caplog.records if "collector=poll" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is not None


def test_a_source_that_recovers_reports_1_again() -> None:
    state = {"fail": True}

    def flaky() -> list[bytes]:
        if state["fail"]:
            raise ValueError("once")
        return [b"# HELP x_total x\n# TYPE x_total counter\nx_total 1.0\n"]

    scrape = Scrape([("flaky", flaky)], "celery_", timer=lambda: 0.0)
    first = samples(scrape.render().decode())
    state["fail"] = False
    second = samples(scrape.render().decode())
    assert (success(first, "flaky"), success(second, "flaky")) == (0.0, 1.0)
    assert ("x_total", ()) not in first and second[("x_total", ())] == 1.0
    assert second[("celery_jobmon_scrape_collector_duration_seconds",
                   (("collector", "flaky"),))] == 0.0
