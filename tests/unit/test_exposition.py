"""Render the model and the exporter's health through their cached expositions, parse the text
back and check every sample; and compare the text, byte for byte, with what prometheus-client
renders for the same families."""

from __future__ import annotations

import platform
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from exporter.metrics import catalogue as m
from exporter.metrics.exposition import CachedExposition
from exporter.state.health import Health
from exporter.state.histogram import HistogramValue
from exporter.state.model import Model

T0 = 1_700_000_000.0
WORKER = "celery@w1"
VERSIONS = {"version": "1.2.3", "celery_version": "5.4.0",
            "python_version": platform.python_version()}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def k(metric: str, /, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """Sample key: the metric name and its labels (``name`` is a label here)."""
    return metric, tuple(sorted(labels.items()))


class Scraper:
    """Renders ``model`` and ``health`` as ``/metrics`` does (one exposition each, their caches
    kept between scrapes)."""

    def __init__(self, model: Model, prefix: str = "celery_",
                 hostname_label: bool = False) -> None:
        self.model = model
        self.health = Health(build=VERSIONS)
        self.exposition = CachedExposition(prefix, m.MODEL, hostname_label=hostname_label)
        self.health_exposition = CachedExposition(prefix, m.HEALTH)

    def text(self) -> str:
        snapshot = self.model.snapshot()
        return b"".join([*self.exposition.chunks(snapshot, snapshot.taken_at),
                         *self.health_exposition.chunks(self.health.snapshot(), T0)]).decode()


def registry_for(model: Model, prefix: str = "celery_") -> Scraper:
    return Scraper(model, prefix)


def scrape(registry: Scraper) -> Samples:
    """Every sample of one scrape: ``{(name, sorted labels): value}``; no duplicates."""
    samples: Samples = {}
    text = registry.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = k(sample.name, **sample.labels)
            assert key not in samples, key
            samples[key] = sample.value
    return samples


def family_types(registry: Scraper) -> dict[str, str]:
    text = registry.text()
    return {family.name: family.type for family in text_string_to_metric_families(text)}


def build_info(prefix: str = "celery_") -> Samples:
    return {k(f"{prefix}jobmon_build_info", version="1.2.3", celery_version="5.4.0",
              python_version=platform.python_version()): 1.0}


@pytest.fixture
def registry(model: Model) -> Scraper:
    return registry_for(model)


def test_empty_model_renders_only_the_exporters_own_series(registry) -> None:
    assert scrape(registry) == {
        k("celery_jobmon_broker_connected"): 0.0,
        k("celery_jobmon_broker_reconnects_total"): 0.0,
        k("celery_jobmon_event_gaps_total"): 0.0,
        k("celery_jobmon_event_batches_total"): 0.0,
        k("celery_jobmon_event_processing_seconds_total"): 0.0,
        k("celery_jobmon_tasks_in_memory"): 0.0,
        k("celery_jobmon_task_index_evictions_total"): 0.0,
        k("celery_jobmon_task_names_folded_total"): 0.0,
        **build_info(),
    }


def test_scrape_renders_every_sample_of_a_small_workload(model, registry, ev, clock) -> None:
    registry.health.set_broker_connected(True)
    registry.health.count_poll_error("stats")
    registry.health.record_batch(0.0)
    model.process_many([
        *ev.success("u1", T0, "app.add", runtime=0.25),
        *ev.failure("u2", T0, "app.pay", queue="billing", runtime=3.0,
                    exception="billing.errors.CardDeclined('x')"),
        ev.heartbeat(WORKER, T0 - 0.5, active=1, processed=5),
        None,
    ])
    clock.advance(1.0)
    add = {"name": "app.add", "queue_name": "default"}
    pay = {"name": "app.pay", "queue_name": "billing"}
    assert scrape(registry) == {
        k("celery_task_sent_total", **add): 1.0,
        k("celery_task_sent_total", **pay): 1.0,
        k("celery_task_received_total", **add): 1.0,
        k("celery_task_received_total", **pay): 1.0,
        k("celery_task_started_total", **add): 1.0,
        k("celery_task_started_total", **pay): 1.0,
        k("celery_task_succeeded_total", **add): 1.0,
        k("celery_task_succeeded_total", **pay): 0.0,
        k("celery_task_failed_total", **add): 0.0,
        k("celery_task_failed_total", **pay): 1.0,
        k("celery_task_exceptions_total", name="app.pay",
          exception="billing.errors.CardDeclined"): 1.0,
        k("celery_task_runtime_seconds_bucket", **add, state="SUCCESS", le="0.5"): 1.0,
        k("celery_task_runtime_seconds_bucket", **add, state="SUCCESS", le="1.0"): 1.0,
        k("celery_task_runtime_seconds_bucket", **add, state="SUCCESS", le="5.0"): 1.0,
        k("celery_task_runtime_seconds_bucket", **add, state="SUCCESS", le="+Inf"): 1.0,
        k("celery_task_runtime_seconds_count", **add, state="SUCCESS"): 1.0,
        k("celery_task_runtime_seconds_sum", **add, state="SUCCESS"): 0.25,
        k("celery_task_runtime_seconds_bucket", **pay, state="FAILURE", le="0.5"): 0.0,
        k("celery_task_runtime_seconds_bucket", **pay, state="FAILURE", le="1.0"): 0.0,
        k("celery_task_runtime_seconds_bucket", **pay, state="FAILURE", le="5.0"): 1.0,
        k("celery_task_runtime_seconds_bucket", **pay, state="FAILURE", le="+Inf"): 1.0,
        k("celery_task_runtime_seconds_count", **pay, state="FAILURE"): 1.0,
        k("celery_task_runtime_seconds_sum", **pay, state="FAILURE"): 3.0,
        # The other state's histogram exists at 0 from the pair's first sighting.
        **{k("celery_task_runtime_seconds_bucket", **labels, le=le): 0.0
           for labels in ({**add, "state": "FAILURE"}, {**pay, "state": "SUCCESS"})
           for le in ("0.5", "1.0", "5.0", "+Inf")},
        **{k(f"celery_task_runtime_seconds_{part}", **labels): 0.0
           for labels in ({**add, "state": "FAILURE"}, {**pay, "state": "SUCCESS"})
           for part in ("count", "sum")},
        # Queue wait: started (sent + 1/8 s) minus sent.
        k("celery_task_queue_wait_seconds_bucket", **add, le="0.1"): 0.0,
        k("celery_task_queue_wait_seconds_bucket", **add, le="1.0"): 1.0,
        k("celery_task_queue_wait_seconds_bucket", **add, le="10.0"): 1.0,
        k("celery_task_queue_wait_seconds_bucket", **add, le="+Inf"): 1.0,
        k("celery_task_queue_wait_seconds_count", **add): 1.0,
        k("celery_task_queue_wait_seconds_sum", **add): 0.125,
        k("celery_task_queue_wait_seconds_bucket", **pay, le="0.1"): 0.0,
        k("celery_task_queue_wait_seconds_bucket", **pay, le="1.0"): 1.0,
        k("celery_task_queue_wait_seconds_bucket", **pay, le="10.0"): 1.0,
        k("celery_task_queue_wait_seconds_bucket", **pay, le="+Inf"): 1.0,
        k("celery_task_queue_wait_seconds_count", **pay): 1.0,
        k("celery_task_queue_wait_seconds_sum", **pay): 0.125,
        k("celery_task_running", **add): 0.0,
        k("celery_task_running", **pay): 0.0,
        # Lost tasks: none, but the series exists from the pair's first sighting.
        k("celery_task_retried_total", **add): 0.0,
        k("celery_task_retried_total", **pay): 0.0,
        k("celery_task_cancelled_total", **add): 0.0,
        k("celery_task_cancelled_total", **pay): 0.0,
        k("celery_task_lost_total", **add): 0.0,
        k("celery_task_lost_total", **pay): 0.0,
        k("celery_worker_up", hostname=WORKER): 1.0,
        k("celery_worker_tasks_active", hostname=WORKER): 1.0,
        k("celery_worker_last_heartbeat_timestamp_seconds", hostname=WORKER): T0 - 0.5,
        k("celery_worker_processed_total", hostname=WORKER): 5.0,
        # The heartbeat's timestamp is 0.5 s behind the exporter's clock at receipt.
        k("celery_worker_clock_offset_seconds", hostname=WORKER): 0.5,
        k("celery_worker_missed_task_events_total", hostname=WORKER): 0.0,
        k("celery_worker_silent", hostname=WORKER): 0.0,
        k("celery_jobmon_events_received_total", type="task-sent"): 2.0,
        k("celery_jobmon_events_received_total", type="task-received"): 2.0,
        k("celery_jobmon_events_received_total", type="task-started"): 2.0,
        k("celery_jobmon_events_received_total", type="task-succeeded"): 1.0,
        k("celery_jobmon_events_received_total", type="task-failed"): 1.0,
        k("celery_jobmon_events_received_total", type="worker-heartbeat"): 1.0,
        k("celery_jobmon_events_malformed_total", reason="not_a_dict"): 1.0,
        k("celery_jobmon_last_event_timestamp_seconds"): T0,
        k("celery_jobmon_broker_connected"): 1.0,
        k("celery_jobmon_broker_reconnects_total"): 0.0,
        k("celery_jobmon_event_gaps_total"): 0.0,
        # The batch's last event (the heartbeat) was sent 0.5 s before the exporter got it.
        k("celery_jobmon_event_lag_seconds"): 0.5,
        k("celery_jobmon_event_batches_total"): 1.0,
        k("celery_jobmon_event_processing_seconds_total"): 0.0,
        k("celery_jobmon_tasks_in_memory"): 2.0,
        k("celery_jobmon_task_index_evictions_total"): 0.0,
        k("celery_jobmon_task_names_folded_total"): 0.0,
        k("celery_jobmon_poll_errors_total", call="stats"): 1.0,
        **build_info(),
    }


def test_lifecycle_counter_value_grows_with_events(model, registry, ev) -> None:
    model.process_many([ev.sent(f"u{i}", T0 + i, "app.add") for i in range(3)])
    first = scrape(registry)
    model.process_many([ev.sent("u9", T0 + 9, "app.add")])
    second = scrape(registry)
    key = k("celery_task_sent_total", name="app.add", queue_name="default")
    assert (first[key], second[key]) == (3.0, 4.0)


def test_histogram_inf_bucket_equals_count_and_buckets_are_cumulative(model, registry,
                                                                     ev) -> None:
    runtimes = [0.125, 0.5, 0.75, 2.0, 4.5, 9.0, 60.0]
    for i, runtime in enumerate(runtimes):
        model.process_many(ev.success(f"u{i}", T0 + i, "app.add", runtime=runtime))
    samples = scrape(registry)
    labels = {"name": "app.add", "queue_name": "default", "state": "SUCCESS"}
    buckets = [samples[k("celery_task_runtime_seconds_bucket", **labels, le=le)]
               for le in ("0.5", "1.0", "5.0", "+Inf")]
    assert buckets == [2.0, 3.0, 5.0, 7.0]
    assert samples[k("celery_task_runtime_seconds_count", **labels)] == 7.0
    assert samples[k("celery_task_runtime_seconds_sum", **labels)] == 76.875


def test_custom_prefix_is_applied_to_every_family(model, ev) -> None:
    model.process_many(ev.success("u1", T0, "app.add"))
    samples = scrape(registry_for(model, prefix="myapp_"))
    assert samples[k("myapp_task_sent_total", name="app.add", queue_name="default")] == 1.0
    assert samples[k("myapp_jobmon_broker_connected")] == 0.0
    assert {name for name, _ in samples if not name.startswith("myapp_")} == set()
    assert {key: v for key, v in samples.items() if key[0] == "myapp_jobmon_build_info"} == \
        build_info("myapp_")


def test_build_info_carries_the_versions(registry) -> None:
    samples = scrape(registry)
    assert {key: v for key, v in samples.items() if key[0] == "celery_jobmon_build_info"} == \
        build_info()


def test_broker_connected_is_0_then_1_once_connected(model, registry) -> None:
    before = scrape(registry)[k("celery_jobmon_broker_connected")]
    registry.health.set_broker_connected(True)
    after = scrape(registry)[k("celery_jobmon_broker_connected")]
    assert (before, after) == (0.0, 1.0)


def test_reconnect_is_counted(model, registry) -> None:
    registry.health.set_broker_connected(True)
    registry.health.set_broker_connected(False)
    registry.health.set_broker_connected(True, reconnected=True)
    assert scrape(registry)[k("celery_jobmon_broker_reconnects_total")] == 1.0


def test_down_worker_renders_0_then_a_forgotten_worker_is_not_rendered(model, registry, ev,
                                                                       clock) -> None:
    model.process_many([ev.heartbeat(WORKER, T0, active=2, processed=5)])

    def worker_samples() -> Samples:
        return {key: v for key, v in scrape(registry).items()
                if key[0].startswith("celery_worker_")}

    up = worker_samples()
    clock.advance(31.0)
    down = worker_samples()
    clock.advance(3600.0)
    gone = worker_samples()
    host = {"hostname": WORKER}
    assert up == {
        k("celery_worker_up", **host): 1.0,
        k("celery_worker_tasks_active", **host): 2.0,
        k("celery_worker_last_heartbeat_timestamp_seconds", **host): T0,
        k("celery_worker_processed_total", **host): 5.0,
        k("celery_worker_clock_offset_seconds", **host): 0.0,
        k("celery_worker_missed_task_events_total", **host): 0.0,
        k("celery_worker_silent", **host): 0.0,
    }
    assert down == {
        k("celery_worker_up", **host): 0.0,
        k("celery_worker_tasks_active", **host): 0.0,
        k("celery_worker_last_heartbeat_timestamp_seconds", **host): T0,
        k("celery_worker_processed_total", **host): 5.0,
        k("celery_worker_clock_offset_seconds", **host): 0.0,
        k("celery_worker_missed_task_events_total", **host): 0.0,
        k("celery_worker_silent", **host): 0.0,
    }
    assert gone == {}


def test_worker_without_heartbeat_counts_renders_no_active_nor_processed(model, registry,
                                                                         ev) -> None:
    model.process_many([ev.online(WORKER, T0)])
    assert {key: v for key, v in scrape(registry).items()
            if key[0].startswith("celery_worker_")} == {
        k("celery_worker_up", hostname=WORKER): 1.0,
        k("celery_worker_last_heartbeat_timestamp_seconds", hostname=WORKER): T0,
        k("celery_worker_clock_offset_seconds", hostname=WORKER): 0.0,
        k("celery_worker_missed_task_events_total", hostname=WORKER): 0.0,
        k("celery_worker_silent", hostname=WORKER): 0.0,
    }


def test_rendered_families_have_their_catalogue_type(model, registry, ev) -> None:
    model.process_many(ev.success("u1", T0, "app.add"))
    # The text format has no info type: an info family is a gauge named <name>_info.
    by_name = {
        "celery_" + (spec.name + "_info" if spec.kind == "info"
                     else spec.name.removesuffix("_total")): spec.kind.replace("info", "gauge")
        for spec in m.CATALOGUE
    }
    rendered = family_types(registry)
    assert {name: by_name.get(name) for name in rendered} == rendered
    poll_only = {"celery_" + spec.name.removesuffix("_total")
                 for spec in m.POLL + m.HISTORY + m.PERIODIC + m.WORKFLOWS + m.SCRAPE}
    # Absent while no repairer reports (--no-repair): nothing says how many are unresolved.
    repair_only = {"celery_" + spec.name for spec in (m.REPAIR_UNRESOLVED, m.REPAIR_PENDING)}
    # Absent without --external-url.
    ui_only = {"celery_jobmon_ui_info"}
    assert set(by_name) - poll_only - repair_only - ui_only - set(rendered) == set()


def test_no_label_value_is_the_string_none(model, registry, ev) -> None:
    model.process_many([ev.started("u1", T0), ev.sent("u2", T0, "app.add", queue=None,
                                                      routing_key=None),
                        ev.failed("u3", T0, exception=None)])
    samples = scrape(registry)
    assert {value for (_, labels) in samples for _, value in labels if value == "None"} == set()
    unknown = {"name": "unknown", "queue_name": "unknown"}
    assert samples[k("celery_task_started_total", **unknown)] == 1.0
    assert samples[k("celery_task_failed_total", **unknown)] == 1.0
    assert samples[k("celery_task_sent_total", name="app.add", queue_name="unknown")] == 1.0
    assert samples[k("celery_task_exceptions_total", name="unknown", exception="unknown")] == 1.0


def test_label_values_are_escaped_as_the_text_format_wants(model, registry, ev) -> None:
    model.process_many([ev.sent("u1", T0, 'q"uo\\te\nd', queue="b\\")])
    lines = registry.text().splitlines()
    assert 'celery_task_sent_total{name="q\\"uo\\\\te\\nd",queue_name="b\\\\"} 1.0' in lines
    assert scrape(registry)[k("celery_task_sent_total", name='q"uo\\te\nd',
                              queue_name="b\\")] == 1.0


def test_a_histogram_is_one_frozen_object_until_it_observes_again(model, registry, ev) -> None:
    model.process_many(ev.success("u1", T0, "app.add", runtime=0.25))
    first = registry.text()
    hist = model.snapshot().runtime[("app.add", "default", "SUCCESS")]
    assert model.snapshot().runtime[("app.add", "default", "SUCCESS")] is hist
    model.process_many(ev.success("u2", T0, "app.add", runtime=4.0))
    second = scrape(registry)
    assert first != registry.text()
    labels = {"name": "app.add", "queue_name": "default", "state": "SUCCESS"}
    assert second[k("celery_task_runtime_seconds_count", **labels)] == 2.0
    assert second[k("celery_task_runtime_seconds_sum", **labels)] == 4.25


def test_hostname_label_splits_task_series_by_worker(clock, ev) -> None:
    model = Model(runtime_buckets=(0.5, 1.0, 5.0), queue_wait_buckets=(0.1, 1.0, 10.0),
                  max_tasks=100, max_task_names=10, worker_timeout=30.0,
                  worker_retention=3600.0, clock=clock, hostname_label=True)
    scraper = Scraper(model, hostname_label=True)
    model.process_many([*ev.success("u1", T0, "app.add", runtime=0.25),
                        *ev.failure("u2", T0, "app.add", runtime=3.0, exception="E('x')")])
    model.process_many([ev.sent("u3", T0, "app.add"),
                        ev.received("u3", T0, "app.add", hostname="celery@w2"),
                        ev.started("u3", T0 + 0.25, hostname="celery@w2")])
    samples = scrape(scraper)
    w1 = {"name": "app.add", "queue_name": "default", "hostname": WORKER}
    w2 = {**w1, "hostname": "celery@w2"}
    assert {key: v for key, v in samples.items() if key[0] == "celery_task_sent_total"} == {
        k("celery_task_sent_total", name="app.add", queue_name="default"): 3.0}
    assert {key: v for key, v in samples.items() if key[0] == "celery_task_started_total"} == {
        k("celery_task_started_total", **w1): 2.0, k("celery_task_started_total", **w2): 1.0}
    assert samples[k("celery_task_succeeded_total", **w1)] == 1.0
    assert samples[k("celery_task_failed_total", **w1)] == 1.0
    assert samples[k("celery_task_running", **w2)] == 1.0
    assert samples[k("celery_task_runtime_seconds_count", **w1, state="FAILURE")] == 1.0
    assert samples[k("celery_task_queue_wait_seconds_count", **w2)] == 1.0
    assert samples[k("celery_task_lost_total", **w2)] == 0.0
    # Exceptions stay per task name, as without the option.
    assert samples[k("celery_task_exceptions_total", name="app.add", exception="E")] == 1.0


# -- every shape of labels and value, byte for byte against prometheus-client ---------------

#: Label values needing every escape, with UTF-8 and format characters.
ODD = ('a "b" \\ c\n ü %s %', "\x00\x01\x02")
BOUNDS = (1e-05, 0.5, 5.0, 1e7)


def _reference(name: str, kind: str, labels: tuple[str, ...],
               values: dict[tuple[str, ...], Any]) -> Any:
    """``values`` as prometheus-client's own family renders them."""
    if kind == "histogram":
        family = HistogramMetricFamily(name, "h", labels=labels)
        for key, hist in values.items():
            buckets = [(floatToGoString(bound), count) for bound, count in zip(
                hist.bounds, hist.cumulative, strict=False)]
            family.add_metric(list(key), [*buckets, ("+Inf", hist.count)], hist.total)
        return family
    family_class = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
    family = family_class(name, "h", labels=labels)
    for key, value in values.items():
        family.add_metric(list(key), value)
    return family


class _Families:
    def __init__(self, families: list[Any]) -> None:
        self.families = families

    def collect(self) -> Any:
        return iter(self.families)


@pytest.mark.parametrize("names", [(), ("hostname",), ("name",), ("hostname", "name")])
@pytest.mark.parametrize("const", [(), (("cluster", "c"),), (("zone", ODD[0]),),
                                   (("a_cluster", ODD[1]), ("zone", "z"))])
def test_histograms_with_labels_on_either_side_of_le_render_as_prometheus_client(
        names: tuple[str, ...], const: tuple[tuple[str, str], ...]) -> None:
    counts = [((0, 0, 0, 0, 0), 0.0), ((1, 1, 2, 3, 3), 0.30000000000000004),
              ((0, 999_999, 999_999, 999_999, 999_999), 2.5),
              ((1, 2, 3, 4, 1_500_000), 12.0), ((1, 1, 1, 1, 1), 1e6),
              ((0, 1, 1, 1, 2), 2.5e9), ((0, 0, 1, 1, 1), -0.5), ((1, 1, 1, 1, 1), 1e-07)]
    key_values = [*ODD, "x", "y", "w@h"]
    values = {tuple(key_values[(i + j) % len(key_values)] for j in range(len(names))):
              HistogramValue(BOUNDS, cumulative, total)
              for i, (cumulative, total) in enumerate(counts)}
    spec = m.MetricSpec("h_seconds", "histogram", "h", names, "seconds", "test",
                        read=lambda snapshot, now: snapshot)
    exposition = CachedExposition("x_", [spec], const_labels=const)
    const_names, const_values = tuple(n for n, _ in const), [v for _, v in const]
    for scraped in (values, dict(list(values.items())[::2])):
        expected = generate_latest(_Families([_reference(
            "x_h_seconds", "histogram", (*names, *const_names),
            {(*key, *const_values): hist for key, hist in scraped.items()})]))
        assert b"".join(exposition.chunks(scraped, T0)) == expected


@pytest.mark.parametrize("names", [(), ("hostname",), ("name", "exception")])
@pytest.mark.parametrize("kind", ["counter", "gauge"])
def test_counter_and_gauge_values_render_as_prometheus_client(names: tuple[str, ...],
                                                              kind: str) -> None:
    numbers = [0, 7, 999_999, 1_000_000, 123_456_789, True, False, 0.5, -0.25, -0.0, 1e-07,
               1.7e9, 999_999.5, float("nan"), float("inf"), float("-inf")]
    key_values = [*ODD, "x"]
    if names:
        values = {(f"v{i}", *(key_values[(i + j) % 3] for j in range(len(names) - 1))): number
                  for i, number in enumerate(numbers)}
    else:
        values = {(): 3}
    spec = m.MetricSpec("c_total" if kind == "counter" else "g", kind, "h", names, "", "test",
                        read=lambda snapshot, now: snapshot)
    const = (("cluster", ODD[0]),)
    exposition = CachedExposition("x_", [spec], const_labels=const)
    family = _reference(f"x_{spec.name.removesuffix('_total')}", kind, (*names, "cluster"),
                        {(*key, ODD[0]): value for key, value in values.items()})
    assert b"".join(exposition.chunks(values, T0)) == generate_latest(_Families([family]))
