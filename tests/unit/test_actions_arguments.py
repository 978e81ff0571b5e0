"""Where a retry's arguments come from: exact result-backend values first, exact reprs second,
and a refusal that says why for everything else. Also the pure parameter parsers."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import uuid

import pytest
from kombu.utils import json as kombu_json

from actions.arguments import (
    KOMBU_JSON_TYPES,
    Unusable,
    check_json,
    from_result_backend,
    parse_repr_arguments,
    resolve_arguments,
)
from actions.errors import BrokerUnavailable, InvalidParameter, NotEligible
from actions.params import check_identifier, parse_states, parse_time, parse_window
from exporter.history import Execution

ROW = Execution(
    task_id="t1", name="app.charge", state="FAILURE", state_ts=1.0, queue="b",
    routing_key="b", exchange=None, hostname="w@h", worker_seen_at=None,
    args="(1, 'é', {'k': [1, 2.5, None]})", args_truncated=False, kwargs="{'flag': True}",
    kwargs_truncated=False, eta=None, expires=None, retries=0, priority=None, parent_id=None,
    root_id=None, sent_at=None, received_at=None, started_at=None, finished_at=None,
    runtime=None, result=None, result_truncated=False, exception_type="ValueError",
    exception_message=None, exception_message_truncated=False, traceback=None,
    traceback_truncated=False, exception_at=None, revoke_reason=None, revoke_signal=None,
    manual_retry_count=0, retry_of=None, created_by_action=None, updated_by_action=None,
    updated_at=1.0,
)


def test_exact_reprs_parse_to_json_values():
    assert parse_repr_arguments("(1, 'é', {'k': [1, 2.5, None]})", False, "{'flag': True}",
                                False) == ([1, "é", {"k": [1, 2.5, None]}], {"flag": True})


@pytest.mark.parametrize(("args", "truncated", "reason"), [
    (None, False, "no args repr"),
    ("(1, 2", True, "cut the args repr at --history-max-field-bytes"),
    ("(1, 2", False, "not a Python literal"),
    ("(<object at 0x7f>,)", False, "not a Python literal"),
    ("([[[...]]],)", False, "contains `...`"),
    ("({...},)", False, "contains `...`"),
    ("(b'raw',)", False, "of type bytes"),
    ("({1, 2},)", False, "of type set"),
    ("(1j,)", False, "of type complex"),
    ("({1: 'int key'},)", False, "key of type int"),
    ("('" + "x" * 1020 + "...',)", False, "the producer may have shortened it"),
    ("42", False, "not a tuple or list"),
    ("([" + "[" * 100 + "]" * 100 + "],)", False, "nested more than 64 levels"),
])
def test_reprs_that_are_not_exact_are_refused_with_the_reason(args, truncated, reason):
    with pytest.raises(Unusable, match=reason.replace("(", r"\(").replace("[", r"\[")):
        parse_repr_arguments(args, truncated, "{}", False)


def test_a_short_string_with_dots_is_still_exact():
    assert parse_repr_arguments("('wait...',)", False, "{}", False) == (["wait..."], {})


def test_non_finite_floats_do_not_survive_json():
    with pytest.raises(Unusable, match=r"args\[0\] is nan"):
        check_json([float("nan")])


def test_kombu_json_gives_back_every_type_check_json_keeps():
    values = [datetime.datetime(2026, 12, 3, 8, 0, 1, 5, tzinfo=datetime.timezone.utc),
              datetime.date(2026, 12, 3), datetime.time(8, 0, 1), decimal.Decimal("1.10"),
              uuid.UUID("12345678-1234-5678-1234-567812345678")]
    assert {type(v) for v in values} == set(KOMBU_JSON_TYPES)
    assert check_json(values) == values
    assert kombu_json.loads(kombu_json.dumps(values)) == values


@pytest.mark.parametrize(("args", "kwargs", "reason"), [
    ("('***', 5)", "{}", "args[0] is a string of asterisks in the repr: the producer masked"),
    ("(1,)", "{'password': '********'}", "kwargs['password'] is a string of asterisks"),
    ("([{'token': '***'}],)", "{}", "args[0][0]['token'] is a string of asterisks"),
    ("'***'", "{}", "the producer masked the args repr ('***')"),
    ("(1,)", "***", "the producer masked the kwargs repr (***)"),
])
def test_masked_reprs_are_never_resent(args, kwargs, reason):
    # Before: ('***', 5) parsed as a literal and the task ran with the string '***'.
    with pytest.raises(Unusable) as caught:
        parse_repr_arguments(args, False, kwargs, False)
    assert str(caught.value).startswith(reason)


def test_two_asterisks_and_stars_inside_text_are_values():
    assert parse_repr_arguments("('**', 'a***b')", False, "{}", False) == (["**", "a***b"], {})


def test_a_datetime_the_backend_holds_is_resent_as_a_datetime():
    # Before: 409 "args[0] is of type datetime, which JSON cannot carry", with the advice to
    # turn on result_extended — which was on.
    when = datetime.datetime(2026, 12, 3, 8, 0, tzinfo=datetime.timezone.utc)
    row = dataclasses.replace(ROW, args=f"({when!r},)")
    chosen = resolve_arguments(row, lambda task_id: {"status": "FAILURE", "args": [when],
                                                     "kwargs": {"at": when.date()}})
    assert (chosen.args, chosen.kwargs, chosen.source) == (
        [when], {"at": when.date()}, "result_backend")


def test_arguments_the_backend_holds_but_json_cannot_carry_are_refused_without_the_reprs():
    meta = {"status": "FAILURE", "args": [1, b"raw"], "kwargs": {}}
    with pytest.raises(NotEligible) as caught:
        resolve_arguments(ROW, lambda task_id: meta)  # ROW's reprs parse: not used
    assert caught.value.detail == (
        "the original arguments cannot be re-sent: result backend: it holds the arguments, but "
        "args[1] is of type bytes, which JSON cannot carry")


def test_the_advice_to_store_arguments_is_given_only_when_it_would_help():
    unusable = dataclasses.replace(ROW, args="(<object at 0x7f>,)")
    expired = resolve_refusal(unusable, lambda task_id: {"status": "PENDING", "result": None})
    assert expired == (
        "the original arguments are not known exactly: result backend: the result backend has "
        "no result for this task (expired, or workers use another backend); history: the args "
        "repr is not a Python literal.")
    not_stored = resolve_refusal(unusable, lambda task_id: {"status": "FAILURE", "result": 1})
    assert not_stored.endswith("To retry such tasks, store the arguments with the result: set "
                               "result_backend and result_extended=True in the workers' Celery "
                               "config, and give the exporter the same backend with "
                               "--result-backend / JOBMON_RESULT_BACKEND.")


def resolve_refusal(row, stored_meta) -> str:
    with pytest.raises(NotEligible) as caught:
        resolve_arguments(row, stored_meta)
    return caught.value.detail


def test_result_backend_meta_gives_args_kwargs_and_queue():
    assert from_result_backend({"status": "FAILURE", "args": [1, [2]], "kwargs": {"a": "b"}}) \
        == ([1, [2]], {"a": "b"})


@pytest.mark.parametrize(("meta", "reason"), [
    (None, "no --result-backend"),
    ({"status": "PENDING", "result": None}, "has no result for this task"),
    ({"status": "FAILURE", "result": "x"}, "without result_extended=True"),
    ({"status": "FAILURE", "args": "(1,)", "kwargs": {}}, "not a list and a dict"),
])
def test_result_backend_meta_without_arguments_is_refused(meta, reason):
    with pytest.raises(Unusable, match=reason.replace("(", r"\(")):
        from_result_backend(meta)


def test_the_result_backend_wins_over_the_reprs():
    meta = {"status": "FAILURE", "args": [9], "kwargs": {}, "queue": "real"}
    chosen = resolve_arguments(ROW, lambda task_id: meta)
    assert (chosen.args, chosen.kwargs, chosen.source, chosen.queue) == (
        [9], {}, "result_backend", "real")


def test_reprs_are_used_when_the_backend_stores_no_arguments():
    chosen = resolve_arguments(ROW, lambda task_id: {"status": "FAILURE", "result": None})
    assert (chosen.args, chosen.kwargs, chosen.source) == (
        [1, "é", {"k": [1, 2.5, None]}], {"flag": True}, "history_repr")


def test_no_exact_source_is_a_409_saying_why_and_how_to_enable_result_extended():
    row = dataclasses.replace(ROW, args="(1, 2", args_truncated=True)
    with pytest.raises(NotEligible) as caught:
        resolve_arguments(row, None)
    assert caught.value.extra["reason"] == "arguments-unavailable"
    assert caught.value.detail.startswith(
        "the original arguments are not known exactly: result backend: none configured "
        "(--result-backend); history: the history cut the args repr at "
        "--history-max-field-bytes. To retry such tasks, store the arguments with the result: "
        "set result_backend and result_extended=True")


def test_an_unreachable_backend_is_a_503_even_with_usable_reprs():
    # Before, parseable reprs stood in for the backend's arguments while it was down.
    def down(task_id):
        raise ConnectionError("refused")

    for row in (dataclasses.replace(ROW, args=None), ROW):
        with pytest.raises(BrokerUnavailable) as caught:
            resolve_arguments(row, down)
        assert caught.value.detail == (
            "the result backend did not answer (ConnectionError: refused): it holds the task's "
            "original arguments (--result-backend); nothing was sent, try again once it "
            "answers")


@pytest.mark.parametrize(("text", "seconds"), [
    ("1714564800", 1714564800.0), ("1714564800.25", 1714564800.25),
    ("2024-05-01T12:00:00Z", 1714564800.0), ("2024-05-01T14:00:00+02:00", 1714564800.0),
    ("2024-05-01T12:00:00", 1714564800.0), ("2024-05-01", 1714521600.0),
])
def test_times_are_iso_8601_or_epoch_seconds(text, seconds):
    assert parse_time(text, "since") == seconds


@pytest.mark.parametrize("text", ["soon", "", "-5", "1e999", "nan", "99999999999999",
                                  "0001-01-01T00:00:00+01:00", "2024-13-01"])
def test_bad_times_are_invalid_parameters_naming_the_parameter(text):
    with pytest.raises(InvalidParameter, match="^until: an ISO 8601 time"):
        parse_time(text, "until")


def test_windows_states_and_identifiers():
    assert (parse_window("1h"), parse_window("20w")) == (3600.0, 20 * 604800.0)
    for bad in ("0", "forever", "600w"):
        with pytest.raises(InvalidParameter, match="^window: "):
            parse_window(bad)
    assert parse_states(["failed,SUCCESS", "Running", "failure"]) == ["FAILURE", "SUCCESS",
                                                                       "STARTED"]
    assert parse_states([]) is None
    with pytest.raises(InvalidParameter, match="unknown state 'sideways'"):
        parse_states(["sideways"])
    assert check_identifier("a.b:c d", "name") == "a.b:c d"
    for bad in ("", "x" * 256, "line\nbreak", "nul\x00"):
        with pytest.raises(InvalidParameter, match="^queue: 1 to 255 characters"):
            check_identifier(bad, "queue")
