"""`celery-jobmon check`: each row judged from gathered facts, the exit code, secrets masked."""

from __future__ import annotations

import sys
import types

import pytest
from celery import Celery

from exporter.cli.check import load_producer_conf
from exporter.cli.check_rows import (
    CheckResult,
    exit_code,
    format_results,
    judge_broker,
    judge_events,
    judge_history,
    judge_result_backend,
    judge_task_sent,
    judge_workers,
    redact,
    task_events_before,
)
from exporter.secrets import mask_urls_in

QUEUES_REPLY = {"w1@h": [{"name": "a", "exchange": {"name": "a"}, "routing_key": "a"},
                         {"name": "b", "exchange": {"name": "b"}, "routing_key": "b"}]}


def test_broker_row_masks_the_password():
    row = judge_broker("amqp://user:s3cret@rabbit:5672//", None)
    assert row == CheckResult("broker", True, "connected to amqp://user:**@rabbit:5672//")
    failed = judge_broker("redis://:s3cret@redis:6379/0",
                          ConnectionError("Error connecting to redis://:s3cret@redis:6379/0"))
    assert failed.ok is False and "s3cret" not in failed.message
    assert "redis://:**@redis:6379/0" in failed.message


def test_mask_hides_passwords_in_any_url_in_a_text():
    assert mask_urls_in("postgresql+psycopg://app:pw@db/x and amqp://u:p@h//") == (
        "postgresql+psycopg://app:**@db/x and amqp://u:**@h//")
    assert mask_urls_in("no url here") == "no url here"


def test_failover_lists_are_masked_url_by_url():
    row = judge_broker("sentinel://:pw1@s1:26379;sentinel://:pw2@s2:26379", None)
    assert "pw1" not in row.message and "pw2" not in row.message


def test_known_secrets_are_redacted_from_every_row():
    rows = [CheckResult("broker", False, "auth failed for hunter22", "check hunter22")]
    assert redact(rows, {"hunter22"}) == [CheckResult("broker", False, "auth failed for **",
                                                      "check **")]


def test_workers_row_lists_each_worker_with_its_queues():
    row = judge_workers([{"w1@h": {"ok": "pong"}}, {"w2@h": {"ok": "pong"}}], QUEUES_REPLY)
    assert row == CheckResult("workers", True,
                              "2 answering: w1@h (a, b); w2@h (queues unknown)")


def test_no_worker_is_a_failure_with_a_fix():
    row = judge_workers([], None)
    assert row.ok is False and "celery -A proj worker -E" in row.fix


def test_task_events_seen_mean_events_are_fine():
    assert judge_events({"task-started": 2, "task-succeeded": 1}, None, 5).ok is True


def test_heartbeats_with_task_events_enabled_everywhere_are_fine():
    row = judge_events({"worker-heartbeat": 3}, {"w1@h": "on"}, 5)
    assert row.ok is True


def test_heartbeats_with_a_worker_without_task_events_fail():
    row = judge_events({"worker-heartbeat": 3}, {"w1@h": "on", "w2@h": "off"}, 5)
    assert row.ok is False and "w2@h" in row.message and "-E" in row.fix


def test_heartbeats_without_confirmation_of_task_events_are_unknown():
    row = judge_events({"worker-heartbeat": 3}, {"w1@h": None}, 5)
    assert row.ok is None and "-E" in row.fix
    assert judge_events({"worker-heartbeat": 3}, None, 5).ok is None


def test_task_events_the_check_switched_on_are_said_so_even_when_seen():
    # Before: check broadcast enable_events, then reported "task events are on".
    row = judge_events({"task-started": 4}, {"w1@h": "on", "w2@h": "switched_on"}, 5)
    assert row == CheckResult(
        "events", True, "task events were off on w2@h and this check switched them on "
        "(serve --enable-events does the same every round)",
        "start workers with -E so that task events do not depend on the exporter")


def test_enable_events_replies_tell_what_was_true_before():
    replies = [{"w1@h": {"ok": "task events already enabled"}},
               {"w2@h": {"ok": "task events enabled"}},
               {"w3@h": {"error": "event dispatcher unavailable"}}, "garbage"]
    assert task_events_before(replies, ["w1@h", "w2@h", "w3@h", "w4@h"]) == {
        "w1@h": "on", "w2@h": "switched_on", "w3@h": "off", "w4@h": "off"}


def test_no_event_at_all_fails():
    row = judge_events({}, {"w1@h": "on"}, 5)
    assert row == CheckResult("events", False, "no worker event in 5s", row.fix)


def test_task_sent_unknown_when_none_seen_and_no_app():
    row = judge_task_sent({"worker-heartbeat": 1}, None, 5)
    assert row.ok is None and row.message.startswith("unknown, none seen")
    assert "task_send_sent_event=True" in row.fix


def test_task_sent_from_events_or_from_the_producer_setting():
    assert judge_task_sent({"task-sent": 2}, None, 5).ok is True
    assert judge_task_sent({}, {"task_send_sent_event": True}, 5).ok is True
    assert judge_task_sent({"task-sent": 2}, {"task_send_sent_event": False}, 5).ok is False


def test_result_backend_needs_result_extended():
    assert judge_result_backend(None).ok is None
    assert judge_result_backend({"result_backend": None}).ok is False
    partial = judge_result_backend({"result_backend": "redis://:pw@h/1",
                                    "result_extended": False})
    assert partial.ok is False and "pw" not in partial.message
    assert judge_result_backend({"result_backend": "redis://h/1",
                                 "result_extended": True}).ok is True


def test_history_row():
    assert judge_history(None, checked=False).ok is None
    assert judge_history(None, checked=True).ok is True
    row = judge_history(PermissionError("sqlite:///x.db: read-only"), checked=True)
    assert row.ok is False and "PermissionError" in row.message


def rows(**ok: bool | None) -> list[CheckResult]:
    return [CheckResult(name, value, "") for name, value in ok.items()]


def test_exit_code_is_zero_only_with_broker_workers_and_events():
    good = dict(broker=True, workers=True, events=True)
    assert exit_code(rows(**good, **{"result backend": False})) == 0
    for name in good:
        for bad in (False, None):
            assert exit_code(rows(**{**good, name: bad})) == 1
    assert exit_code(rows(broker=True, workers=True)) == 1


def test_report_shows_fixes_of_rows_that_are_not_fine():
    text = format_results([CheckResult("broker", True, "connected", "unused"),
                           CheckResult("events", False, "none", "start with -E"),
                           CheckResult("result backend", None, "unknown")])
    assert text.splitlines() == ["[ ok ] broker: connected", "[FAIL] events: none",
                                 "       fix: start with -E", "[ ?? ] result backend: unknown"]


@pytest.fixture
def producer_module():
    module = types.ModuleType("jobmon_check_producer")
    app = Celery("producer", set_as_current=False)
    app.conf.update(task_send_sent_event=True, result_backend="redis://h/1",
                    result_extended=True)
    module.app = app  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    yield module.__name__
    del sys.modules[module.__name__]


def test_producer_conf_is_read_from_the_users_app(producer_module):
    conf, problem = load_producer_conf(f"{producer_module}:app")
    assert problem is None
    assert conf == {"task_send_sent_event": True, "result_backend": "redis://h/1",
                    "result_extended": True}


def test_an_app_that_cannot_be_imported_is_reported():
    conf, problem = load_producer_conf("no_such_module_xyz:app")
    assert conf is None and problem is not None and problem.ok is False
    assert "no_such_module_xyz" in problem.message
