"""The pure merge rules of the history: event → partial row, partial rows → one row."""

from __future__ import annotations

import random
import re

import pytest

from exporter.history.merge import (
    EVENT_FIELDS,
    cap_text,
    exception_message,
    finalize,
    merge,
    merge_into,
    precap_event,
    record_from_event,
)
from tests.support.clock import T0
from tests.support.events import PRODUCER, WORKER, task_event

TB = "Traceback (most recent call last):\n  File \"tasks.py\", line 3\nValueError: boom\n"


def sent(uuid, ts, retries=0, eta=None, **extra):
    return task_event("task-sent", uuid=uuid, timestamp=ts, hostname=PRODUCER, name="app.add",
                      args="(1, 2)", kwargs="{'x': 1}", retries=retries, eta=eta, expires=None,
                      queue="default", exchange="", routing_key="default", root_id=uuid,
                      parent_id=None, **extra)


def received(uuid, ts, retries=0, hostname=WORKER, eta=None):
    return task_event("task-received", uuid=uuid, timestamp=ts, hostname=hostname,
                      name="app.add", args="(1, 2)", kwargs="{'x': 1}", retries=retries, eta=eta,
                      expires=None, root_id=uuid, parent_id=None)


def started(uuid, ts, hostname=WORKER):
    return task_event("task-started", uuid=uuid, timestamp=ts, hostname=hostname)


def succeeded(uuid, ts, runtime, hostname=WORKER):
    return task_event("task-succeeded", uuid=uuid, timestamp=ts, hostname=hostname, result="3",
                      runtime=runtime)


def failed(uuid, ts, exception="ValueError('boom')", hostname=WORKER):
    return task_event("task-failed", uuid=uuid, timestamp=ts, hostname=hostname,
                      exception=exception, traceback=TB)


def retried(uuid, ts, exception, hostname=WORKER):
    return task_event("task-retried", uuid=uuid, timestamp=ts, hostname=hostname,
                      exception=exception, traceback=TB)


def row_of(*events) -> dict:
    partials = [record_from_event(e) for e in events]
    assert all(p is not None for p in partials)
    row = merge(*(p[1] for p in partials))
    finalize(row)
    return row


def test_task_sent_sets_identity_publication_and_pending_but_not_the_worker():
    task_id, row = record_from_event(sent("t1", T0))
    assert task_id == "t1"
    assert row == {
        "state": "PENDING", "state_ts": T0, "name": "app.add", "root_id": "t1",
        "args": "(1, 2)", "args_truncated": False, "kwargs": "{'x': 1}",
        "kwargs_truncated": False, "retries": 0, "sent_at": T0, "routing_key": "default",
        "queue": "default",
    }


def test_task_sent_without_queue_takes_the_routing_key_as_queue():
    event = sent("t1", T0)
    event["queue"] = None
    event["routing_key"] = "emails"
    assert record_from_event(event)[1]["queue"] == "emails"


def test_task_failed_parses_exception_class_and_message():
    _, row = record_from_event(failed("t1", T0 + 1, "billing.CardDeclined('card 42')"))
    assert row == {
        "state": "FAILURE", "state_ts": T0 + 1, "exception_at": T0 + 1,
        "exception_type": "billing.CardDeclined", "exception_message": "card 42",
        "exception_message_truncated": False, "traceback": TB, "traceback_truncated": False,
        "worker_seen_at": T0 + 1, "hostname": "celery@w1",
    }


def test_task_revoked_records_how():
    _, row = record_from_event(task_event("task-revoked", uuid="t1", timestamp=T0,
                                          terminated=True, signum=15, expired=False))
    assert (row["state"], row["revoke_reason"], row["revoke_signal"]) == (
        "REVOKED", "terminated", 15)
    _, row = record_from_event(task_event("task-revoked", uuid="t1", timestamp=T0,
                                          terminated=False, signum=None, expired=True))
    assert (row["revoke_reason"], row["revoke_signal"]) == ("expired", None)


@pytest.mark.parametrize("event", [
    {"type": "worker-heartbeat", "uuid": "t1", "timestamp": T0},
    {"type": "task-sent", "timestamp": T0},
    {"type": "task-sent", "uuid": "", "timestamp": T0},
    {"type": "task-sent", "uuid": "t1", "timestamp": float("nan")},
    {"type": "task-sent", "uuid": "t1"},
    {"type": "task-sent", "uuid": "x" * 256, "timestamp": T0},
    {"type": "task-sent", "uuid": "a\x00b", "timestamp": T0},
    {"type": "task-sent", "uuid": "a\ud800", "timestamp": T0},
    {"type": "task-sent", "uuid": 42, "timestamp": T0},
])
def test_unusable_events_give_no_record(event):
    assert record_from_event(event) is None


def test_success_lifecycle_row():
    row = row_of(sent("t1", T0), received("t1", T0 + 0.0625), started("t1", T0 + 0.125),
                 succeeded("t1", T0 + 0.375, 0.25))
    assert row["state"] == "SUCCESS"
    assert row["state_ts"] == row["finished_at"] == T0 + 0.375
    assert (row["sent_at"], row["received_at"], row["started_at"]) == (
        T0, T0 + 0.0625, T0 + 0.125)
    assert (row["runtime"], row["result"], row["hostname"]) == (0.25, "3", "celery@w1")


def test_failure_runtime_is_finished_minus_started():
    row = row_of(sent("t1", T0), started("t1", T0 + 0.125), failed("t1", T0 + 3.125))
    assert (row["state"], row["runtime"], row["finished_at"]) == ("FAILURE", 3.0, T0 + 3.125)


def repaired(uuid, ts, type_="task-succeeded", source="result_backend", **fields):
    """A repair record as the model sends it (exporter.state.model._repair_record)."""
    return {"type": type_, "uuid": uuid, "timestamp": ts, "local_received": ts + 60,
            "state_source": source, **fields}


def test_rows_of_events_say_their_state_came_from_events():
    assert row_of(sent("t1", T0))["state_source"] == "events"


def test_a_repaired_row_says_where_its_state_came_from_and_fills_what_no_event_said():
    row = row_of(sent("t1", T0), repaired("t1", T0 + 5, "task-failed", exception="KeyError('k')",
                                          traceback=TB, hostname="celery@w2", queue="other",
                                          args="[9]"))
    assert (row["state"], row["state_ts"], row["finished_at"], row["state_source"]) == (
        "FAILURE", T0 + 5, T0 + 5, "result_backend")
    assert (row["exception_type"], row["exception_message"], row["hostname"]) == (
        "KeyError", "k", "celery@w2")
    # What the events said first stays; no run time without a start.
    assert (row["queue"], row["args"], row["runtime"]) == ("default", "(1, 2)", None)


def test_a_repair_of_a_reserved_task_sets_no_received_time():
    row = row_of(sent("t1", T0), repaired("t1", T0, "task-received", source="workers"))
    assert (row["state"], row["state_source"], row.get("received_at")) == (
        "RECEIVED", "workers", None)


def test_a_late_real_end_takes_the_state_and_its_source_back_a_late_received_does_not():
    repair = repaired("t1", T0 + 5, result="3")
    late_received = received("t1", T0 + 1)
    assert row_of(sent("t1", T0), repair, late_received)["state_source"] == "result_backend"
    row = row_of(sent("t1", T0), repair, started("t1", T0 + 2),
                 succeeded("t1", T0 + 5.25, 3.0))
    assert (row["state_ts"], row["state_source"], row["runtime"]) == (T0 + 5.25, "events", 3.0)
    # In any order.
    row = row_of(succeeded("t1", T0 + 5.25, 3.0), repair, sent("t1", T0))
    assert (row["state_ts"], row["state_source"]) == (T0 + 5.25, "events")


def test_late_task_received_never_overwrites_task_failed():
    row = row_of(sent("t1", T0), started("t1", T0 + 0.125), failed("t1", T0 + 1),
                 received("t1", T0 + 0.0625))
    assert (row["state"], row["state_ts"], row["received_at"]) == (
        "FAILURE", T0 + 1, T0 + 0.0625)


def test_equal_timestamps_resolve_by_precedence_in_either_order():
    a, b = started("t1", T0), failed("t1", T0)
    assert row_of(a, b)["state"] == row_of(b, a)["state"] == "FAILURE"


def test_timestamps_only_fill_in_never_cleared():
    row = row_of(sent("t1", T0), received("t1", T0 + 1), started("t1", T0 + 2))
    assert row["sent_at"] == T0  # started carries no sent_at: kept
    assert row["finished_at"] is None and row["runtime"] is None


@pytest.mark.parametrize("skew", [0.02, 7200.0, -0.02, -7200.0])
def test_a_finished_task_never_shows_an_earlier_state_whatever_the_worker_clock(skew):
    # The worker's clock is `skew` seconds behind the producer's (negative: ahead): its events
    # can look older than task-sent. Seen with 20 ms: every row stayed PENDING.
    worker = T0 - skew
    for events in ([sent("t1", T0), received("t1", worker), started("t1", worker + 0.001),
                    succeeded("t1", worker + 0.01, 0.009)],
                   [sent("t1", T0), received("t1", worker), started("t1", worker + 0.001),
                    failed("t1", worker + 0.01)]):
        for order in (events, events[::-1]):
            row = row_of(*order)
            assert (row["state"], row["state_ts"], row["finished_at"]) == (
                "SUCCESS" if len(row.get("result") or "") else "FAILURE", worker + 0.01,
                worker + 0.01)
    assert row_of(sent("t1", T0), received("t1", worker))["state"] == "RECEIVED"
    assert row_of(sent("t1", T0), received("t1", worker),
                  started("t1", worker + 0.001))["state"] == "STARTED"


def test_retried_task_shows_retry_count_last_exception_and_latest_worker():
    row = row_of(
        sent("t1", T0, retries=0), received("t1", T0 + 1, 0, "celery@w1"),
        started("t1", T0 + 2, "celery@w1"), retried("t1", T0 + 3, "ValueError('first')"),
        sent("t1", T0 + 4, retries=1), received("t1", T0 + 5, 1, "celery@w2"),
        started("t1", T0 + 6, "celery@w2"), retried("t1", T0 + 7, "KeyError('second')"),
        sent("t1", T0 + 8, retries=2), received("t1", T0 + 9, 2, "celery@w1"),
        started("t1", T0 + 10, "celery@w1"), succeeded("t1", T0 + 10.5, 0.5),
    )
    assert row["state"] == "SUCCESS"
    assert row["retries"] == 2
    assert (row["exception_type"], row["exception_message"], row["exception_at"]) == (
        "KeyError", "second", T0 + 7)
    assert (row["sent_at"], row["received_at"], row["started_at"]) == (T0, T0 + 9, T0 + 10)
    assert (row["hostname"], row["runtime"]) == ("celery@w1", 0.5)


def test_a_retrying_task_is_in_retry_until_a_worker_takes_it_again():
    row = row_of(sent("t1", T0), started("t1", T0 + 1), retried("t1", T0 + 2, "IOError('x')"))
    assert (row["state"], row["finished_at"], row["exception_type"]) == ("RETRY", None, "IOError")
    # The retry is published again (task-sent from the worker that retried it): still RETRY
    # until a worker receives it.
    resent = [sent("t1", T0), started("t1", T0 + 1), retried("t1", T0 + 2, "IOError('x')"),
              sent("t1", T0 + 2.5, retries=1)]
    assert row_of(*resent)["state"] == "RETRY"
    assert row_of(*resent, received("t1", T0 + 3, retries=1))["state"] == "RECEIVED"


def _lifecycles() -> list[dict]:
    events = []
    events += [sent("a", T0), received("a", T0 + 0.0625), started("a", T0 + 0.125),
               succeeded("a", T0 + 0.375, 0.25)]
    events += [sent("b", T0 + 1), received("b", T0 + 1.0625), started("b", T0 + 1.125),
               failed("b", T0 + 4.125)]
    events += [sent("c", T0 + 2, 0), received("c", T0 + 2.0625, 0, "celery@w1"),
               started("c", T0 + 2.125), retried("c", T0 + 2.25, "OSError('io')"),
               sent("c", T0 + 2.5, 1), received("c", T0 + 2.5625, 1, "celery@w2"),
               started("c", T0 + 2.625, "celery@w2"), succeeded("c", T0 + 3, 0.375, "celery@w2")]
    events += [sent("d", T0 + 3), task_event("task-revoked", uuid="d", timestamp=T0 + 3.5,
                                             terminated=False, signum=None, expired=False)]
    events += [sent("e", T0 + 4), received("e", T0 + 4.0625)]
    return events


def _rows(events: list[dict], groups: int = 1, rng: random.Random | None = None) -> dict:
    """Merge per task id; with ``groups`` > 1 the events are split into groups merged apart
    (as batches are), then the groups are merged (as the upsert merges with the stored row).
    """
    partial_groups: list[dict[str, dict]] = []
    chunks = [events] if groups == 1 else [[] for _ in range(groups)]
    if groups > 1:
        assert rng is not None
        for event in events:
            chunks[rng.randrange(groups)].append(event)
    for chunk in chunks:
        merged: dict[str, dict] = {}
        for event in chunk:
            task_id, partial = record_from_event(event)
            merged[task_id] = merge(merged.get(task_id, {}), partial)
        partial_groups.append(merged)
    result: dict[str, dict] = {}
    for group in partial_groups:
        for task_id, partial in group.items():
            result[task_id] = merge(result.get(task_id, {}), partial)
    for row in result.values():
        finalize(row)
    return result


@pytest.mark.parametrize("seed", range(30))
def test_shuffled_and_batched_events_give_the_same_rows(seed):
    rng = random.Random(seed)
    expected = _rows(_lifecycles())
    events = _lifecycles()
    rng.shuffle(events)
    assert _rows(events) == expected
    assert _rows(events, groups=rng.randint(2, 6), rng=rng) == expected


def _pending_rows(events: list[dict], use_known: bool) -> dict:
    """Merge as the writer does: the first record is the pending row, the next merge into it."""
    pending: dict[str, dict] = {}
    for event in events:
        known = pending.get(event["uuid"])
        task_id, partial = record_from_event(event, known=known if use_known else None)
        if known is None:
            pending[task_id] = partial
        else:
            merge_into(known, partial)
    for row in pending.values():
        finalize(row)
    return pending


@pytest.mark.parametrize("seed", range(10))
def test_records_made_for_a_known_row_merge_into_the_same_rows(seed):
    events = _lifecycles()
    random.Random(seed).shuffle(events)
    assert _pending_rows(events, use_known=True) == _pending_rows(events, use_known=False)


def test_a_record_for_a_known_row_leaves_out_the_first_fields_it_holds():
    known = record_from_event(sent("t1", T0))[1]
    assert record_from_event(received("t1", T0 + 1), known=known)[1] == {
        "state": "RECEIVED", "state_ts": T0 + 1, "retries": 0, "received_at": T0 + 1,
        "worker_seen_at": T0 + 1, "hostname": "celery@w1"}


def test_in_order_rows_of_the_shuffle_reference():
    rows = _rows(_lifecycles())
    assert {k: r["state"] for k, r in rows.items()} == {
        "a": "SUCCESS", "b": "FAILURE", "c": "SUCCESS", "d": "REVOKED", "e": "RECEIVED"}
    assert (rows["c"]["retries"], rows["c"]["hostname"], rows["c"]["exception_type"]) == (
        1, "celery@w2", "OSError")
    assert rows["b"]["runtime"] == 3.0
    assert rows["d"]["runtime"] is None and rows["d"]["revoke_reason"] == "revoked"


def test_merging_leaves_action_columns_alone():
    stored = {"state": "FAILURE", "state_ts": T0, "manual_retry_count": 2,
              "updated_by_action": "retry"}
    merge_into(stored, record_from_event(received("t1", T0 - 1))[1])
    assert stored == {"state": "FAILURE", "state_ts": T0, "manual_retry_count": 2,
                      "updated_by_action": "retry", "name": "app.add", "root_id": "t1",
                      "args": "(1, 2)", "args_truncated": False, "kwargs": "{'x': 1}",
                      "kwargs_truncated": False, "retries": 0, "received_at": T0 - 1,
                      "worker_seen_at": T0 - 1, "hostname": "celery@w1"}
    assert set(EVENT_FIELDS).isdisjoint({"manual_retry_count", "retry_of", "created_by_action",
                                         "updated_by_action", "updated_at"})


def test_cap_text_cuts_utf8_on_a_character_boundary():
    text = "é" * 3000 + "€" * 3000  # 6000 + 9000 bytes
    capped, cut = cap_text(text, 4096)
    assert cut is True
    assert capped == "é" * 2048 and len(capped.encode()) == 4096
    capped, cut = cap_text("ab€", 4)  # € is 3 bytes: it does not fit after "ab"
    assert (capped, cut) == ("ab", True)
    assert cap_text("x" * 4096, 4096) == ("x" * 4096, False)
    assert cap_text("x" * 4097, 4096) == ("x" * 4096, True)
    assert cap_text(None, 10) == (None, False)
    assert cap_text(("a", 1), 100) == ("('a', 1)", False)


def test_cap_text_makes_text_storable():
    assert cap_text("a\x00b", 100) == ("a\\x00b", False)
    assert cap_text("x\ud800y", 100) == ("x?y", False)


@pytest.mark.parametrize("text, message", [
    ("ValueError('boom')", "boom"),
    ('ValueError("it\'s")', "it's"),
    ("ValueError()", ""),
    ("KeyError('a', 1)", "'a', 1"),
    ("mod.Timeout: took 5s", "took 5s"),
    ("something odd", "something odd"),
    (None, None),
])
def test_exception_message(text, message):
    assert exception_message(text) == message


def test_args_over_the_cap_are_flagged():
    event = sent("t1", T0)
    event["args"] = "('" + "ü" * 5000 + "',)"
    _, row = record_from_event(event, max_field_bytes=100)
    assert row["args_truncated"] is True and row["kwargs_truncated"] is False
    assert row["args"] == "('" + "ü" * 49 and len(row["args"].encode()) == 100


def _long_traceback(frames: int) -> str:
    body = "".join(f'  File "tasks.py", line {i}, in recurse\n    return recurse(n - 1)\n'
                   for i in range(frames))
    return ("Traceback (most recent call last):\n" + body
            + "RecursionError: maximum recursion depth exceeded\n")


def test_a_cut_traceback_keeps_its_head_and_the_line_that_names_the_error():
    # Before: the cut kept the first 4096 bytes and lost the last line.
    traceback = _long_traceback(1000)
    event = task_event("task-failed", uuid="t1", timestamp=T0, hostname=WORKER,
                       exception="RecursionError('maximum recursion depth exceeded')",
                       traceback=traceback)
    precap_event(event, 4096)
    row = record_from_event(event, 4096)[1]
    stored = row["traceback"]
    assert row["traceback_truncated"] is True
    assert len(stored.encode()) <= 4096
    assert stored.startswith("Traceback (most recent call last):\n  File \"tasks.py\", line 0")
    assert stored.endswith("RecursionError: maximum recursion depth exceeded\n")
    head, marker, tail = re.split(r"(\n\.\.\. \[[\d,]+ characters cut\] \.\.\.\n)", stored)
    cut = int(re.sub(r"\D", "", marker))
    assert len(head) + cut + len(tail) == len(traceback)
    assert traceback.startswith(head) and traceback.endswith(tail)


def test_a_cut_message_is_the_message_not_the_exceptions_repr():
    message = "x" * 70_000 + "END"
    event = task_event("task-failed", uuid="t1", timestamp=T0, hostname=WORKER,
                       exception=f"ValueError('{message}')", traceback=TB)
    precap_event(event, 4096)  # the repr is cut before its closing quote and parenthesis
    row = record_from_event(event, 4096)[1]
    assert (row["exception_type"], row["exception_message_truncated"]) == ("ValueError", True)
    assert row["exception_message"] == "x" * 4096
