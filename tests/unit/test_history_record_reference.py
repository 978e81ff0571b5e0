"""record_from_event against a plain reference: the same partial row for any event.

The reference below follows the module table of :mod:`exporter.history.merge` field by field,
without the fast paths the real function takes for the usual values (short ASCII strings,
finite floats, small ints, events without the fields any type may carry, quoted exception
messages without escapes). Hypothesis draws events of every type with the usual values and
odd ones: ``None``, ints as strings, bools, non-ASCII, NUL, lone surrogates, strings beyond
the cap, NaN and infinities, ints beyond the float range, escaped and cut exception reprs.
The events also go through :func:`precap_event` first, as the writer queues them: the row must
be the one the whole event gives.
"""

from __future__ import annotations

import ast
import math
import re
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from exporter.events.canvas import chord_group_id
from exporter.events.parse import (
    WRAPPER_EXCEPTIONS,
    exception_class,
    parse_eta,
    traceback_exception,
)
from exporter.events.table import EVENT_STATE
from exporter.history.merge import cap_traceback, precap_event, record_from_event

set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "celery-jobmon-hypothesis")

T0 = 1_700_000_000.0


# -- the reference --------------------------------------------------------------------------

def clean(text: str) -> str:
    text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def capped(value: Any, cap: int) -> tuple[str | None, bool]:
    if value is None:
        return None, False
    text = clean(value if isinstance(value, str) else repr(value))
    data = text.encode("utf-8")
    if len(data) <= cap:
        return text, False
    return data[:cap].decode("utf-8", "ignore"), True


def identifier(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return clean((value if isinstance(value, str) else str(value))[:255])


def number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value) if math.isfinite(value) else None
    except OverflowError:
        return None


def int32(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if -2**31 <= value < 2**31 else None


def storable_id(value: Any) -> bool:
    return (isinstance(value, str) and 0 < len(value) <= 255 and "\x00" not in value
            and clean(value) == value)


def message(text: Any) -> tuple[str | None, bool]:
    """The message of an exception repr and whether the repr was cut inside it."""
    if not isinstance(text, str):
        return None, False
    call = re.match(r"^\s*[A-Za-z_][\w.]*\((.*)\)\s*$", text, re.DOTALL)
    if call:
        inner = call.group(1).strip()
        if 2 <= len(inner) <= 100_000 and inner[0] == inner[-1] and inner[0] in "'\"":
            try:
                value = ast.literal_eval(inner)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                return inner, False
            return (value if isinstance(value, str) else inner), False
        return inner, False
    cut = re.match(r"^\s*[A-Za-z_][\w.]*\((['\"])(.*)$", text, re.DOTALL)
    if cut:
        return cut.group(2), True
    colon = re.match(r"^\s*[A-Za-z_][\w.]*\s*:\s?(.*)$", text, re.DOTALL)
    return (colon.group(1) if colon else text), False


def reference(event: dict[str, Any], cap: int, known: dict[str, Any] | None
              ) -> tuple[str, dict[str, Any]] | None:
    event_type = event.get("type")
    if not isinstance(event_type, str) or event_type not in EVENT_STATE:
        return None
    timestamp, task_id = number(event.get("timestamp")), event.get("uuid")
    if timestamp is None or not storable_id(task_id):
        return None
    known = known or {}
    state = EVENT_STATE[event_type]
    row: dict[str, Any] = {"state": state, "state_ts": timestamp}
    source = event.get("state_source")
    if source is not None:
        row["state_source"] = identifier(source)
        if identifier(event.get("queue")) is not None:
            row["queue"] = identifier(event.get("queue"))
    if state == "REVOKED":
        row["revoke_reason"] = ("expired" if event.get("expired") else
                                "terminated" if event.get("terminated") else "revoked")
        row["revoke_signal"] = int32(event.get("signum"))
    for field in ("name", "parent_id", "root_id"):
        if known.get(field) is None and identifier(event.get(field)) is not None:
            row[field] = identifier(event.get(field))
    if event.get("name") == "celery.chord_unlock" and known.get("group_id") is None:
        group_id = identifier(chord_group_id("celery.chord_unlock", event.get("args")))
        if group_id is not None:
            row["group_id"] = group_id
    for field in ("args", "kwargs"):
        if event.get(field) is not None and known.get(field) is None:
            row[field], row[field + "_truncated"] = capped(event[field], cap)
    for field in ("eta", "expires"):
        if parse_eta(event.get(field)) is not None:
            row[field] = parse_eta(event.get(field))
    for field in ("retries", "priority"):
        if int32(event.get(field)) is not None:
            row[field] = int32(event.get(field))
    if event_type == "task-sent":
        row["sent_at"] = timestamp
        for field in ("routing_key", "exchange"):
            if identifier(event.get(field)) is not None:
                row[field] = identifier(event.get(field))
        queue = identifier(event.get("queue")) or row.get("routing_key")
        if queue is not None:
            row["queue"] = queue
    elif event_type == "task-received" and source is None:
        row["received_at"] = timestamp
    elif event_type == "task-started":
        row["started_at"] = timestamp
    elif event_type == "task-succeeded":
        row["result"], row["result_truncated"] = capped(event.get("result"), cap)
        if number(event.get("runtime")) is not None:
            row["runtime"] = max(0.0, number(event.get("runtime")))
    elif event_type in ("task-failed", "task-retried"):
        exception, traceback = event.get("exception"), event.get("traceback")
        text, cut = message(exception)
        real = traceback_exception(traceback)
        if exception_class(exception) in WRAPPER_EXCEPTIONS and real is not None:
            text = real[1]
        row["exception_at"] = timestamp
        row["exception_type"] = identifier(exception_class(exception, traceback))
        row["exception_message"], text_cut = capped(text, cap)
        row["exception_message_truncated"] = text_cut or cut
        # The traceback's head-and-tail cut has its own tests (test_history_merge.py).
        row["traceback"], row["traceback_truncated"] = cap_traceback(traceback, cap)
    if event_type != "task-sent" and identifier(event.get("hostname")) is not None:
        row["worker_seen_at"] = timestamp
        row["hostname"] = identifier(event.get("hostname"))
    return task_id, row


# -- the events -----------------------------------------------------------------------------

TYPES = [*EVENT_STATE, "worker-heartbeat", "task-exploded", ""]
odd_numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-2**40, 2**40),
    st.sampled_from([2**31 - 1, 2**31, -2**31, -2**31 - 1, 2**1100, True, False, T0]))
odd_texts = st.one_of(
    st.text(max_size=12),
    st.text(st.characters(codec="utf-8"), max_size=12),
    st.sampled_from(["", "5", "-1", "3.5", "nan", "inf", "\x00", "a\x00b", "\ud800", "x\udfffy",
                     "tâche.☃", "🐍", " ", "\n"]),
    st.builds(lambda text, times: text * times, st.sampled_from(["x", "é", "🐍", "a\x00"]),
              st.sampled_from([63, 64, 65, 255, 256, 300, 20_000])),
)
odd = st.one_of(st.none(), odd_numbers, odd_texts, st.lists(st.integers(), max_size=2),
                st.binary(max_size=3))
exceptions = st.one_of(
    odd,
    st.sampled_from([
        "ValueError('boom')", 'ValueError("boom")', "ValueError('it\\'s')", "ValueError('a\\nb')",
        "ValueError('a\nb')", "ValueError('\\x41')", "ValueError('\t')", "ValueError('')",
        "ValueError()", "KeyError('a', 1)", "billing.errors.CardDeclined('x')", "Timeout: 5s",
        "ExceptionWithTraceback()", "billiard.einfo.ExceptionWithTraceback('x')",
        "ValueError('cut here", 'ValueError("cut', "ValueError('''x''')", "ValueError(b'x')",
        "  ValueError('padded')  ", "ValueError('x' 'y')", "not an exception repr"]),
    st.builds(lambda name, quote, text: f"{name}({quote}{text}{quote})",
              st.sampled_from(["ValueError", "a.b.Error", "_E"]), st.sampled_from(["'", '"', ""]),
              odd_texts),
)
tracebacks = st.one_of(odd, st.sampled_from([
    "Traceback (most recent call last):\n  File \"t.py\"\nValueError: boom\n",
    "Traceback (most recent call last):\nbilliard.exceptions.TimeLimitExceeded: "
    "TimeLimitExceeded(1,)\n",
    "Traceback (most recent call last):\n" + "  frame\n" * 3000 + "KeyError: 'k'\n"]))
FIELDS = {
    "name": st.one_of(st.sampled_from(["app.add", "celery.chord_unlock"]), odd),
    "args": st.one_of(st.sampled_from(["(1, 2)", "('g-1', {})", "('\ud800',)"]), odd),
    "kwargs": st.one_of(st.just("{}"), odd), "result": st.one_of(st.just("3"), odd),
    "root_id": odd, "parent_id": odd, "group_id": odd, "queue": odd, "routing_key": odd,
    "exchange": odd, "hostname": st.one_of(st.just("celery@w1"), odd),
    "eta": st.one_of(st.sampled_from(["2024-01-01T00:00:00", "2024-01-01T00:00:00+02:00",
                                      "2024-13-45"]), odd),
    "expires": odd, "retries": odd, "priority": odd, "runtime": odd, "signum": odd,
    "expired": odd, "terminated": odd, "state_source": st.one_of(st.just("workers"), odd),
    "exception": exceptions, "traceback": tracebacks, "clock": odd, "pid": odd,
}


@st.composite
def events(draw: Any) -> dict[str, Any]:
    event: dict[str, Any] = {}
    if draw(st.integers(0, 15)):
        event["type"] = draw(st.one_of(st.sampled_from(TYPES), odd))
    if draw(st.integers(0, 15)):
        event["uuid"] = draw(st.one_of(st.sampled_from(["u1", "ü-2", "x" * 255]), odd))
    if draw(st.integers(0, 15)):
        event["timestamp"] = draw(st.one_of(st.floats(T0 - 5, T0 + 5), odd))
    for key in draw(st.sets(st.sampled_from(sorted(FIELDS)), max_size=10)):
        event[key] = draw(FIELDS[key])
    return event


@settings(max_examples=1500, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(event=events(), cap=st.sampled_from([1, 8, 64, 300, 16_384]),
       known=st.one_of(st.none(), st.fixed_dictionaries({}, optional={
           "name": st.just("app.add"), "args": st.just("()"), "root_id": st.just("r"),
           "group_id": st.just("g")})))
def test_record_from_event_gives_the_reference_row(event: dict[str, Any], cap: int,
                                                   known: dict[str, Any] | None) -> None:
    expected = reference(event, cap, known)
    assert record_from_event(event, cap, known) == expected
    queued = dict(event)
    precap_event(queued, cap)
    assert record_from_event(queued, cap, known) == expected


@settings(max_examples=1500, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(event_type=st.sampled_from(["task-failed", "task-retried"]), exception=exceptions,
       traceback=tracebacks, cap=st.sampled_from([8, 64, 16_384]))
def test_a_failure_gives_the_reference_exception_fields(event_type: str, exception: Any,
                                                        traceback: Any, cap: int) -> None:
    event = {"type": event_type, "uuid": "u1", "timestamp": T0, "hostname": "celery@w1",
             "exception": exception, "traceback": traceback}
    assert record_from_event(event, cap) == reference(event, cap, None)
