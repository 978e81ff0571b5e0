"""Property tests: random event dicts never break the model or the history merge.

Hypothesis builds Celery-like events with every field possibly missing, of the wrong type,
non-finite, huge, far in the past or the future, duplicated and reordered, mixed with
non-dicts. Invariants: nothing raises; every input is counted exactly once (received or
malformed); the running gauge is never negative and equals the tasks the index holds as
running; histograms stay finite; the merge's order-independent rules give the same row in any
order and the derived fields are consistent; the cached exposition renders exactly what
prometheus-client renders for the same snapshot, scrape after scrape.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from prometheus_client import generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from exporter.events.table import TERMINAL_STATES
from exporter.history import create_history_engine, get_execution, upgrade
from exporter.history.merge import finalize, merge, record_from_event
from exporter.history.writer import HistoryWriter
from exporter.metrics import catalogue as m
from exporter.metrics.exposition import CachedExposition
from exporter.state.model import TASK_LOST, Model, ModelSnapshot

# Hypothesis keeps caches in ./.hypothesis by default; keep the checkout clean.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "celery-jobmon-hypothesis")

T0 = 1_700_000_000.0
TYPES = ["task-sent", "task-received", "task-started", "task-succeeded", "task-failed",
         "task-retried", "task-revoked", "task-rejected", "task-cancelled", "worker-online",
         "worker-heartbeat", "worker-offline", "task-exploded", "", TASK_LOST]
UUIDS = ["u1", "u2", "u3", "ü-4", ""]
HOSTS = ["celery@w1", "celery@w2", "web-1"]

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=T0 - 10, max_value=T0 + 10),
    st.sampled_from([0.0, -1.0, 4_102_444_800.0, T0, T0 + 0.5, 1e300]),
    st.integers(min_value=-2**70, max_value=2**70),
    st.sampled_from([2**1100, -2**1100, 10**400]),  # JSON allows them; float() does not
    st.booleans(),
)
junk = st.one_of(st.none(), numbers, st.text(max_size=20), st.binary(max_size=5),
                 st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3),
                                                                       st.integers(), max_size=2))
texts = st.one_of(st.text(max_size=40), st.sampled_from([
    "ValueError('boom')", "ExceptionWithTraceback()", "KeyError('a', 1)", "x" * 300,
    "Traceback (most recent call last):\n  File \"x\"\nbilliard.Nope: it broke\n",
    "2024-01-01T00:00:00", "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+14:00",
    "2024-13-45", "tâche.☃"]))
OPTIONAL = {
    "name": st.one_of(st.sampled_from(["app.add", "app.mul", "tâche.☃", "", 'q"uo\\te\nd']),
                      junk),
    "queue": st.one_of(st.sampled_from(["default", "a", "", "b\\"]), junk),
    "routing_key": st.one_of(st.sampled_from(["default", "b"]), junk),
    "hostname": st.one_of(st.sampled_from(HOSTS), junk),
    "runtime": st.one_of(st.floats(min_value=-5, max_value=1e6), junk),
    "retries": st.one_of(st.integers(min_value=-3, max_value=2**40), junk),
    "eta": st.one_of(texts, junk), "expires": st.one_of(texts, junk),
    "exception": st.one_of(texts, junk), "traceback": st.one_of(texts, junk),
    "args": st.one_of(texts, junk), "kwargs": st.one_of(texts, junk),
    "result": st.one_of(texts, junk), "active": st.one_of(st.integers(0, 8), junk),
    "processed": st.one_of(st.integers(0, 10**6), junk), "freq": junk,
    "priority": junk, "parent_id": junk, "root_id": junk, "signum": junk,
    "terminated": junk, "expired": junk, "clock": junk, "utcoffset": junk, "pid": junk,
}


@st.composite
def events(draw: Any) -> Any:
    if draw(st.integers(0, 30)) == 0:
        return draw(junk)  # not a dict at all
    event: dict[str, Any] = {}
    if draw(st.integers(0, 20)):
        event["type"] = draw(st.one_of(st.sampled_from(TYPES), junk))
    if draw(st.integers(0, 20)):
        event["uuid"] = draw(st.one_of(st.sampled_from(UUIDS), junk))
    if draw(st.integers(0, 20)):
        event["timestamp"] = draw(st.one_of(
            st.floats(min_value=T0 - 5, max_value=T0 + 5), numbers))
    for key in draw(st.sets(st.sampled_from(sorted(OPTIONAL)), max_size=8)):
        event[key] = draw(OPTIONAL[key])
    return event


batches = st.lists(st.lists(events(), max_size=12), min_size=1, max_size=8)


def check_invariants(model: Model, inputs: int) -> None:
    snap = model.snapshot()
    # Events held for their task-sent (at most HOLD_SECONDS) are neither yet.
    assert sum(snap.events_received.values()) + sum(snap.events_malformed.values()) + (
        model.held_events()) == inputs
    assert all(v >= 0 for v in snap.running.values())
    held = [record.running for _, record in model.index if record.running is not None]
    # Only a task whose latest state is STARTED counts as running (a terminal or later event
    # always takes it out of the gauge).
    assert all(record.state == "STARTED" for _, record in model.index
               if record.running is not None)
    assert sum(snap.running.values()) == len(held)
    for labels in set(held):
        assert snap.running[labels] == held.count(labels)
    assert len(model.index) <= model.index.capacity
    for counts in (*snap.lifecycle.values(), snap.exceptions, snap.lost):
        assert all(isinstance(v, int) and v >= 0 for v in counts.values())
    for labels in snap.lifecycle["task-started"]:
        assert labels in snap.lifecycle["task-succeeded"]
        assert labels in snap.lifecycle["task-failed"]
    finished = sum(snap.lifecycle["task-succeeded"].values()) + sum(
        snap.lifecycle["task-failed"].values())
    assert sum(h.count for h in snap.runtime.values()) <= finished
    for histogram in (*snap.runtime.values(), *snap.queue_wait.values()):
        assert math.isfinite(histogram.total) and histogram.total >= 0
        assert list(histogram.cumulative) == sorted(histogram.cumulative)
    assert snap.event_lag is None or math.isfinite(snap.event_lag)


@settings(max_examples=150, deadline=None, database=None)
@given(batches=batches, gaps=st.lists(st.sampled_from([0.0, 0.5, 31.0, 90.0]), min_size=8,
                                      max_size=8))
def test_model_never_raises_and_keeps_its_invariants(batches: list[list[Any]],
                                                     gaps: list[float]) -> None:
    now = [T0]
    sink: list[dict] = []
    model = Model(runtime_buckets=(0.5, 5.0), queue_wait_buckets=(0.5, 5.0), max_tasks=3,
                  max_task_names=2, worker_timeout=30.0, worker_retention=60.0,
                  clock=lambda: now[0], history=sink.append, task_lost_grace=30.0)
    inputs = 0
    for batch, gap in zip(batches, gaps, strict=False):
        model.process_many(batch)
        inputs += len(batch)
        # Replay the same batch: every task event in it is now a duplicate or a repeat.
        model.process_many([dict(e) if isinstance(e, dict) else e for e in batch])
        inputs += len(batch)
        now[0] += gap
        model.tick()
        check_invariants(model, inputs)
    assert all(isinstance(e, dict) and e.get("uuid") for e in sink)


class ReferenceCollector:
    """The model's families built as prometheus-client's custom-collector pattern does (fresh
    ``*MetricFamily`` objects per scrape): what the exposition must render byte for byte.
    """

    def __init__(self, snap: ModelSnapshot, hostname: bool,
                 const: tuple[tuple[str, str], ...] = ()) -> None:
        self.snap, self.hostname = snap, hostname
        self.const_names = tuple(name for name, _ in const)
        self.const_values = [value for _, value in const]

    def spec(self, spec: m.MetricSpec) -> m.MetricSpec:
        """The family as rendered: ``hostname`` when asked, the constant labels declared last
        (prometheus-client sorts the labels of each sample)."""
        spec = m.with_hostname(spec) if self.hostname and spec in m.HOSTNAME_LABELED else spec
        return dataclasses.replace(spec, labels=(*spec.labels, *self.const_names))

    def values(self, spec: m.MetricSpec, values: Any) -> Metric:
        spec = self.spec(spec)
        kind = CounterMetricFamily if spec.kind == "counter" else GaugeMetricFamily
        family = kind("celery_" + spec.name, spec.help, labels=spec.labels)
        for labels, value in values.items():
            family.add_metric([*labels, *self.const_values], value)
        return family

    def histograms(self, spec: m.MetricSpec, values: Any) -> Metric:
        spec = self.spec(spec)
        family = HistogramMetricFamily("celery_" + spec.name, spec.help, labels=spec.labels)
        for labels, hist in values.items():
            buckets = [(floatToGoString(b), c) for b, c in zip(hist.bounds, hist.cumulative,
                                                                strict=False)]
            family.add_metric([*labels, *self.const_values], [*buckets, ("+Inf", hist.count)],
                              hist.total)
        return family

    def collect(self) -> Any:
        snap, values = self.snap, self.values
        for event_type, spec in m.LIFECYCLE.items():
            yield values(spec, snap.lifecycle[event_type])
        yield values(m.TASK_EXCEPTIONS, snap.exceptions)
        yield self.histograms(m.TASK_RUNTIME, snap.runtime)
        yield self.histograms(m.TASK_QUEUE_WAIT, snap.queue_wait)
        yield values(m.TASK_RUNNING, snap.running)
        yield values(m.TASK_LOST, snap.lost)
        workers = snap.workers
        yield values(m.WORKER_UP, {(w.hostname,): float(w.up) for w in workers})
        yield values(m.WORKER_TASKS_ACTIVE, {
            (w.hostname,): w.active for w in workers if w.active is not None})
        yield values(m.WORKER_LAST_HEARTBEAT, {(w.hostname,): w.last_heartbeat for w in workers})
        yield values(m.WORKER_PROCESSED, {
            (w.hostname,): w.processed for w in workers if w.processed is not None})
        yield values(m.WORKER_CLOCK_OFFSET, {
            (w.hostname,): w.clock_offset for w in workers if w.clock_offset is not None})
        yield values(m.WORKER_MISSED_TASK_EVENTS, {
            (w.hostname,): w.missed_task_events for w in workers})
        yield values(m.WORKER_SILENT, {(w.hostname,): float(w.silent) for w in workers})
        yield values(m.EVENTS_RECEIVED, {(k,): v for k, v in snap.events_received.items()})
        yield values(m.EVENTS_MALFORMED, {(k,): v for k, v in snap.events_malformed.items()})
        scalars = [(m.LAST_EVENT, snap.last_event), (m.EVENT_LAG, snap.event_lag),
                   (m.TASKS_IN_MEMORY, snap.tasks_in_memory),
                   (m.TASK_INDEX_EVICTIONS, snap.task_index_evictions),
                   (m.TASK_NAMES_FOLDED, snap.task_names_folded)]
        for spec, value in scalars:
            if value is not None:
                yield values(spec, {(): float(value)})


#: ``--const-label`` pairs: none; one sorting first; two around the family's own labels and
#: ``le``, one value needing every escape.
CONST_LABELS = [(), (("cluster", "eu-1"),),
                (("zone", 'a "b" \\ c\n ü'), ("a_cluster", "x"))]


@settings(max_examples=100, deadline=None, database=None)
@given(batches=batches, gaps=st.lists(st.sampled_from([0.0, 0.5, 31.0, 3600.0]), min_size=8,
                                      max_size=8), hostname=st.booleans(),
       const=st.sampled_from(CONST_LABELS))
def test_exposition_renders_what_prometheus_client_renders_scrape_after_scrape(
        batches: list[list[Any]], gaps: list[float], hostname: bool,
        const: tuple[tuple[str, str], ...]) -> None:
    now = [T0]
    model = Model(runtime_buckets=(0.5, 5.0, 1e7), queue_wait_buckets=(1e-05, 0.5),
                  max_tasks=3, max_task_names=2, worker_timeout=30.0, worker_retention=60.0,
                  clock=lambda: now[0], task_lost_grace=30.0, hostname_label=hostname)
    exposition = CachedExposition("celery_", m.MODEL, hostname_label=hostname,
                                  const_labels=const)
    for batch, gap in zip(batches, gaps, strict=False):
        model.process_many(batch)
        now[0] += gap
        for _ in range(2):  # the second render comes from the cache
            snap = model.snapshot()
            expected = generate_latest(ReferenceCollector(snap, hostname, const))
            assert b"".join(exposition.chunks(snap, snap.taken_at)) == expected


# -- the history merge ------------------------------------------------------------------------

ORDER_FREE = ("state", "state_ts", "sent_at", "received_at", "started_at", "eta", "retries",
              "worker_seen_at", "hostname", "exception_at")


@settings(max_examples=200, deadline=None, database=None)
@given(stream=st.lists(events(), max_size=15), data=st.data())
def test_merge_never_raises_and_order_free_fields_ignore_order(stream: list[Any],
                                                               data: Any) -> None:
    rows = []
    for event in stream:
        if not isinstance(event, dict):
            continue
        record = record_from_event(event, 64)
        if record is not None:
            task_id, row = record
            assert isinstance(task_id, str) and 0 < len(task_id) <= 255
            for key in ("args", "kwargs", "result", "exception_message", "traceback"):
                assert row.get(key) is None or len(row[key].encode()) <= 64
            rows.append(row)
    if not rows:
        return
    shuffled = data.draw(st.permutations(rows))
    first, second = merge(*rows), merge(*shuffled)
    # state/state_ts decide ties by precedence, so the pair is order-free; so are min/max.
    assert {k: first.get(k) for k in ORDER_FREE if k not in ("hostname",)} == {
        k: second.get(k) for k in ORDER_FREE if k not in ("hostname",)}
    for row in (first, second):
        finalize(row)
        assert (row["finished_at"] is not None) == (row["state"] in TERMINAL_STATES)
        assert row["runtime"] is None or (math.isfinite(row["runtime"]) and row["runtime"] >= 0)
        for key in ("name", "queue", "args"):  # "first" fields: one of the inputs' values
            assert row.get(key) is None or any(r.get(key) == row[key] for r in rows)


@settings(max_examples=25, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(stream=st.lists(events(), max_size=20))
def test_writer_stores_every_usable_event_without_refusing_rows(stream: list[Any]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{Path(directory) / 'history.sqlite3'}"
        upgrade(url)
        engine = create_history_engine(url)
        writer = HistoryWriter(engine, max_field_bytes=64, max_delay=0.01)
        writer.start()
        for event in stream:
            writer.submit(event)
        assert writer.flush(10)
        writer.stop(5)
        usable = {record[0] for e in stream if isinstance(e, dict)
                  and (record := record_from_event(e, 64)) is not None}
        stats = writer.stats()
        assert stats.dropped["rejected"] == 0 and stats.write_errors == 0
        assert all(get_execution(engine, task_id) is not None for task_id in usable)
        engine.dispose()
