"""Bad input, without services: every malformed, duplicated, reordered, oversized or
implausible event is counted and skipped, stored capped or clamped — and none raises.

The same faults go through real brokers and a real exporter in
``tests/faults/test_bad_input.py``; here the exact arithmetic is checked on the model, the
history merge and the writer directly.
"""

from __future__ import annotations

import base64
import json
import tracemalloc
from typing import Any

import orjson
import pytest
from celery import Celery
from kombu.exceptions import ContentDisallowed
from kombu.serialization import loads as kombu_loads
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine

from exporter.events.consumer import EventConsumer
from exporter.events.parse import exception_class
from exporter.events.redis_stream import accept_content, decode_payload
from exporter.events.table import MAX_CLOCK_SKEW
from exporter.history import create_history_engine, get_execution, upgrade
from exporter.history.merge import finalize, merge, record_from_event
from exporter.history.writer import HistoryWriter
from exporter.metrics import catalogue as m
from exporter.metrics.exposition import CachedExposition
from exporter.state.health import Health
from exporter.state.model import Model
from tests.support.clock import T0, FakeClock
from tests.support.events import PRODUCER, task_event, without, worker_event

ADD = ("app.add", "default")
BUCKETS = (0.5, 1.0, 5.0)
TIME_LIMIT_TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "celery/worker/request.py", line 563, in on_timeout\n    raise exc\n'
    "billiard.exceptions.TimeLimitExceeded: TimeLimitExceeded(1,)\n")


def sent(uuid: str, t: float, name: str = "app.add", **fields: Any) -> dict:
    return task_event("task-sent", uuid=uuid, timestamp=t, **{
        "name": name, "queue": "default", "routing_key": "default", "args": "(1, 2)",
        "kwargs": "{}", "retries": 0, "hostname": PRODUCER, **fields})


def lifecycle(uuid: str, t: float, runtime: float = 0.25) -> list[dict]:
    return [sent(uuid, t),
            task_event("task-received", uuid=uuid, timestamp=t + 0.0625, name="app.add"),
            task_event("task-started", uuid=uuid, timestamp=t + 0.125),
            task_event("task-succeeded", uuid=uuid, timestamp=t + 0.125 + runtime,
                       runtime=runtime, result="3")]


@pytest.fixture
def sink() -> list[dict]:
    return []


@pytest.fixture
def model(clock: FakeClock, sink: list[dict]) -> Model:
    return Model(runtime_buckets=BUCKETS, queue_wait_buckets=BUCKETS, max_tasks=1000,
                 max_task_names=100, worker_timeout=30.0, worker_retention=3600.0, clock=clock,
                 history=sink.append)


def counts(model: Model) -> dict[str, dict]:
    return {t: dict(c) for t, c in model.snapshot().lifecycle.items() if c}


# -- field types and missing fields -------------------------------------------------------


@pytest.mark.parametrize(("event", "reason"), [
    (b"not even a dict", "not_a_dict"),
    ({"uuid": "u", "timestamp": T0}, "missing_type"),
    (without(task_event("task-sent", uuid=None, timestamp=T0), "uuid"), "missing_uuid"),
    (task_event("task-sent", uuid=42, timestamp=T0), "missing_uuid"),
    (task_event("task-sent", uuid="u", timestamp=None), "bad_timestamp"),
    (task_event("task-sent", uuid="u", timestamp="2024-01-01"), "bad_timestamp"),
    (task_event("task-sent", uuid="u", timestamp=True), "bad_timestamp"),
    (task_event("task-sent", uuid="u", timestamp=float("nan")), "bad_timestamp"),
    (task_event("task-sent", uuid="u", timestamp=float("inf")), "bad_timestamp"),
    # Valid JSON, beyond a float.
    (task_event("task-sent", uuid="u", timestamp=2**1100), "bad_timestamp"),
    (task_event("task-succeeded", uuid="u", timestamp=T0, runtime=10**400), "bad_field"),
    (task_event("task-sent", uuid="u", timestamp=T0, name=["app.add"]), "bad_field"),
    (task_event("task-sent", uuid="u", timestamp=T0, retries="3"), "bad_field"),
    (task_event("task-succeeded", uuid="u", timestamp=T0, runtime="fast"), "bad_field"),
    (task_event("task-succeeded", uuid="u", timestamp=T0, runtime=float("inf")),
     "bad_field"),
    (worker_event("worker-heartbeat", timestamp=T0, hostname=7), "missing_hostname"),
    (worker_event("worker-heartbeat", timestamp=T0, active="2"), "bad_field"),
    (task_event("task-exploded", uuid="u", timestamp=T0), "unknown_type"),
])
def test_wrong_types_and_missing_fields_are_counted_by_reason(model, sink, event, reason):
    model.process_many([event, *lifecycle("ok", T0)])
    snap = model.snapshot()
    assert snap.events_malformed == {reason: 1}
    assert sum(snap.events_received.values()) == 4  # the good lifecycle after it still counts
    assert counts(model)["task-succeeded"] == {ADD: 1}
    assert len(sink) == 4


# -- timestamps far in the past and the future --------------------------------------------


def test_timestamps_of_1970_and_2100_are_counted_and_clamped_to_receipt(model, clock, sink):
    year_2100 = 4_102_444_800.0
    # The producer's clock says 1970, the worker's says 2100; each event arrives 1/4 s apart.
    events = [sent("t", 0.0),
              task_event("task-received", uuid="t", timestamp=year_2100, name="app.add"),
              task_event("task-started", uuid="t", timestamp=year_2100 + 1),
              task_event("task-failed", uuid="t", timestamp=year_2100 + 9,
                         exception="ValueError('x')")]
    for event in events:
        model.process_many([event])
        clock.now += 0.25
    snap = model.snapshot()
    assert counts(model) == {"task-sent": {ADD: 1}, "task-received": {ADD: 1},
                             "task-started": {ADD: 1}, "task-succeeded": {ADD: 0},
                             "task-failed": {ADD: 1}, "task-retried": {ADD: 0},
                             "task-cancelled": {ADD: 0}}
    # started arrived 0.5 s after sent, failed 0.25 s after started: receipt times.
    assert snap.queue_wait[ADD].total == 0.5 and snap.queue_wait[ADD].count == 1
    assert snap.runtime[(*ADD, "FAILURE")].total == 0.25
    assert snap.running == {ADD: 0}
    assert snap.event_lag == 0.0
    assert [e["timestamp"] for e in sink] == [T0, T0 + 0.25, T0 + 0.5, T0 + 0.75]
    row = finalize_row(sink)
    assert (row["state"], row["sent_at"], row["runtime"]) == ("FAILURE", T0, 0.25)


def test_timestamps_within_the_skew_are_kept_as_sent(model, sink):
    late = T0 - MAX_CLOCK_SKEW + 1  # a day-old event (a long outage), still believed
    model.process_many([sent("t", late)])
    assert sink[0]["timestamp"] == late


def finalize_row(events: list[dict]) -> dict:
    rows = [record_from_event(e) for e in events]
    row = merge(*(r[1] for r in rows if r is not None))
    finalize(row)
    return row


# -- duplicated and reordered events --------------------------------------------------------


def test_every_event_delivered_twice_counts_once(model, sink):
    events = lifecycle("t", T0)
    model.process_many([dict(e) for e in events] + [dict(e) for e in events])
    snap = model.snapshot()
    assert counts(model) == {"task-sent": {ADD: 1}, "task-received": {ADD: 1},
                             "task-started": {ADD: 1}, "task-succeeded": {ADD: 1},
                             "task-failed": {ADD: 0}, "task-retried": {ADD: 0},
                             "task-cancelled": {ADD: 0}}
    assert snap.events_malformed == {"duplicate": 4}
    assert sum(snap.events_received.values()) == 4
    assert snap.runtime[(*ADD, "SUCCESS")].count == 1
    assert len(sink) == 4


def test_reordered_and_duplicated_lifecycle_counts_exactly(model, sink):
    s, r, st, ok = lifecycle("t", T0)
    model.process_many([dict(s), dict(ok), dict(st), dict(r), dict(ok), dict(st), dict(s)])
    snap = model.snapshot()
    assert counts(model) == {"task-sent": {ADD: 1}, "task-received": {ADD: 1},
                             "task-started": {ADD: 1}, "task-succeeded": {ADD: 1},
                             "task-failed": {ADD: 0}, "task-retried": {ADD: 0},
                             "task-cancelled": {ADD: 0}}
    assert snap.events_malformed == {"duplicate": 3}
    assert snap.running.get(ADD, 0) == 0
    assert model.index.peek("t").state == "SUCCESS"
    assert finalize_row(sink)["state"] == "SUCCESS"


def test_a_retried_task_sends_its_events_again_and_they_count(model):
    first = lifecycle("t", T0)[:3] + [task_event("task-retried", uuid="t", timestamp=T0 + 0.25,
                                                 exception="Retry('in 1s')")]
    second = lifecycle("t", T0 + 1)
    second[0]["retries"] = 1
    model.process_many(first + second)
    assert counts(model) == {"task-sent": {ADD: 2}, "task-received": {ADD: 2},
                             "task-started": {ADD: 2}, "task-succeeded": {ADD: 1},
                             "task-failed": {ADD: 0}, "task-retried": {ADD: 1},
                             "task-cancelled": {ADD: 0}}
    assert model.snapshot().events_malformed == {}


def test_a_second_failure_report_of_one_execution_counts_once(model, sink):
    # Celery reports a hard time limit twice: from the timeout handler, then from the pool.
    failed = [task_event("task-failed", uuid="t", timestamp=T0 + t,
                         exception="ExceptionWithTraceback()", traceback=TIME_LIMIT_TRACEBACK)
              for t in (1.125, 1.25)]
    model.process_many(lifecycle("t", T0)[:3] + failed)
    snap = model.snapshot()
    assert snap.lifecycle["task-failed"] == {ADD: 1}
    assert snap.exceptions == {("app.add", "TimeLimitExceeded"): 1}
    assert snap.events_malformed == {"duplicate": 1}
    row = finalize_row(sink)
    assert (row["exception_type"], row["exception_message"]) == (
        "TimeLimitExceeded", "TimeLimitExceeded(1,)")


def test_exception_wrapper_without_traceback_keeps_its_own_name():
    assert exception_class("ExceptionWithTraceback()") == "ExceptionWithTraceback"
    assert exception_class("ExceptionWithTraceback()", "garbage\n\n") == "ExceptionWithTraceback"
    assert exception_class("ValueError('x')", TIME_LIMIT_TRACEBACK) == "ValueError"


# -- unicode ----------------------------------------------------------------------------------


def test_unicode_task_names_and_exception_messages_render_and_store(model, sink):
    name, message = "tâches.envoyer_☃_任务", "ünïcödé ☃ 💥 \"quoted\" \\ back"
    model.process_many([sent("t", T0, name=name),
                        task_event("task-started", uuid="t", timestamp=T0 + 1),
                        task_event("task-failed", uuid="t", timestamp=T0 + 2,
                                   exception=f"ValueError({message!r})")])
    snapshot = model.snapshot()
    text = b"".join(CachedExposition("celery_", m.MODEL).chunks(snapshot, T0)).decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text)
               for s in f.samples}
    assert samples[("celery_task_failed_total", (("name", name), ("queue_name", "default")))] == 1
    assert samples[("celery_task_exceptions_total", (("exception", "ValueError"),
                                                     ("name", name)))] == 1
    row = finalize_row(sink)
    assert (row["name"], row["exception_message"]) == (name, message)


# -- oversized fields: capped in the history, bounded in memory ----------------------------


def test_ten_megabyte_args_are_stored_capped_and_not_held_in_memory(tmp_path):
    url = f"sqlite:///{tmp_path / 'history.sqlite3'}"
    upgrade(url)
    engine = create_history_engine(url)
    writer = HistoryWriter(engine, max_field_bytes=4096)
    huge = "x" * (10 * 1024 * 1024)
    reference = record_from_event(sent("t0", T0, args=huge, kwargs="{'k': '" + huge + "'}"))
    tracemalloc.start()
    try:
        for i in range(20):
            event = sent(f"t{i}", T0, args=huge + str(i), kwargs="{'k': '" + huge + "'}")
            writer.submit(event)
            del event
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 20 queued events x 2 fields of 10 MB would be 400 MB; each is cut to 4 kB on submit.
    assert held < 2 * 1024 * 1024
    writer.start()
    assert writer.flush(10)
    writer.stop(5)
    row = get_execution(engine, "t0")
    assert len(row.args) == 4096 and row.args_truncated
    assert len(row.kwargs) == 4096 and row.kwargs_truncated
    assert reference is not None
    assert (row.args, row.kwargs) == (reference[1]["args"], reference[1]["kwargs"])
    engine.dispose()


def test_a_long_wrapped_traceback_still_names_the_real_exception_after_the_cut():
    frames = "".join(f'  File "app/m{i}.py", line {i}, in f{i}\n    g{i}()\n' for i in range(400))
    traceback = ("Traceback (most recent call last):\n" + frames
                 + "billiard.exceptions.TimeLimitExceeded: TimeLimitExceeded(1,)\n")
    event = task_event("task-failed", uuid="t", timestamp=T0, exception="ExceptionWithTraceback()",
                       traceback=traceback)
    whole = record_from_event(event, 4096)
    engine = create_engine("sqlite://")
    writer = HistoryWriter(engine, max_field_bytes=4096)
    writer.submit(event)
    queued = next(e for q in writer._queues for e in q)
    assert len(queued["traceback"]) < len(traceback) // 2
    assert record_from_event(queued, 4096) == whole
    assert whole[1]["exception_type"] == "TimeLimitExceeded"
    engine.dispose()


@pytest.mark.parametrize("text", [
    "é" * 5000, "☃" * 5000, "💥" * 5000, "a\x00" * 5000, "ab\ud800" * 3000, "x" * 4096,
    "x" * 4097, "é" * 2048, "é" * 2049,
], ids=lambda text: f"{len(text)}x{text[-1]!a}")
def test_cutting_on_submit_stores_what_the_whole_text_would_give(text):
    event = task_event("task-failed", uuid="t", timestamp=T0, args=text, kwargs=text,
                       result=text, exception=f"ValueError({text!r})",
                       traceback="Traceback (most recent\n" + text)
    whole = record_from_event(event, 4096)
    engine = create_engine("sqlite://")
    writer = HistoryWriter(engine, max_field_bytes=4096)
    writer.submit(event)
    queued = next(e for q in writer._queues for e in q)  # the cut copy the thread will merge
    assert record_from_event(queued, 4096) == whole
    engine.dispose()


# -- undecodable payloads (Redis fast path) -------------------------------------------------


def envelope(body: bytes, content_type: str = "application/json",
             encoding: str = "utf-8") -> bytes:
    return orjson.dumps({"body": base64.b64encode(body).decode(), "content-type": content_type,
                         "content-encoding": encoding, "headers": {},
                         "properties": {"body_encoding": "base64"}})


@pytest.mark.parametrize(("payload", "reason"), [
    (envelope(b"{not json"), "decode_error"),
    (envelope(b'{"type": "task-sent", "name": "\xff\xfe"}'), "decode_error"),  # bad UTF-8
    (envelope(b"\x80\x81"), "decode_error"),
    (envelope(b"hello", "text/plain"), "content_disallowed"),
    (envelope(b"hello", "application/x-strange"), "content_disallowed"),
    (envelope(b"\x80\x04K\x01.", "application/x-python-serialize", "binary"),
     "content_disallowed"),  # pickle, not accepted
    (b"\xff\xfe not an envelope", "decode_error"),
    (orjson.dumps({"no": "body"}), "decode_error"),
    (orjson.dumps({"body": "!!!not base64", "properties": {"body_encoding": "base64"}}),
     "decode_error"),
])
def test_undecodable_payloads_are_counted_and_the_rest_of_the_batch_kept(model, payload,
                                                                          reason):
    consumer = EventConsumer(Celery(broker="redis://127.0.0.1:1/0", set_as_current=False),
                             model, Health(), accept=("json",), reconnect_max_interval=1.0)
    good = [envelope(json.dumps(e).encode()) for e in lifecycle("t", T0)]
    consumer._process_payloads([payload, *good], accept_content(("json",)))
    snap = model.snapshot()
    assert snap.events_malformed == {reason: 1}
    assert snap.lifecycle["task-succeeded"] == {ADD: 1}


def test_pickle_is_refused_unless_accepted():
    payload = envelope(b"\x80\x04K\x01.", "application/x-python-serialize", "binary")
    with pytest.raises(ContentDisallowed):
        decode_payload(payload, accept_content(("json",)))
    assert decode_payload(payload, accept_content(("json", "pickle"))) == [1]


@pytest.mark.parametrize("number", [2**64, 2**70, -(2**63) - 1, 10**19, -(10**30), 2**63 - 1])
def test_integers_beyond_64_bits_decode_as_kombu_decodes_them(number):
    # orjson turns integers outside 64 bits into floats; kombu's JSON keeps them exact.
    body = json.dumps({"type": "worker-heartbeat", "hostname": "w@h", "processed": number,
                       "args": "('12345678901234567890',)"}).encode()
    decoded = decode_payload(envelope(body), accept_content(("json",)))
    assert decoded == [kombu_loads(body, "application/json", "utf-8")]
    assert type(decoded[0]["processed"]) is int
