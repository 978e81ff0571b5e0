"""Celery task events → one ``task_execution`` row per task id: the pure part of the history.

:func:`record_from_event` turns one event into a *partial row*: a dict ``column → value`` holding
only what that event says (absent key = the event does not know). :func:`merge_into` combines two
partial rows (or a stored row and a partial one) by the rules in :data:`MERGE_RULES`; the rules do
not depend on arrival order, so events may be merged in memory, in any grouping, across batches
and with the stored row, and give the same result. :func:`finalize` then derives ``finished_at``
and, for failures, ``runtime``. Nothing here does I/O.

``MERGE_RULES`` — which event may set which field, and which value wins when two meet
(events: sent, received, started, succeeded, failed, retried, revoked, rejected, cancelled, and
``task-lost``, the model's synthetic record for a task whose worker died with it: state LOST,
stamped with the worker's last sign of life, so any real terminal event after it still wins):

================================  =========================  ===================================
fields (the first one leads)      set by                     when two values meet
================================  =========================  ===================================
name                              sent, received             first (the same in every event)
args, args_truncated              sent, received             first (pair moves together)
kwargs, kwargs_truncated          sent, received             first (pair)
queue                             sent (``queue``, else      first
                                  ``routing_key``)
routing_key, exchange             sent                       first
parent_id, root_id, expires       sent, received             first
group_id                          sent, received of          first
                                  ``celery.chord_unlock``
                                  (its first argument)
priority                          any event with             first
                                  ``priority``
sent_at                           sent                       min (the first publication)
received_at / started_at          received / started         max (the latest attempt)
eta                               sent, received             max (a retry's ETA is later)
retries                           sent, received             max
state, state_ts, revoke_reason,   every event                later (stage, state_ts,
revoke_signal, state_source       (``EVENT_STATE``)          precedence): an end beats a
                                                             worker's state beats PENDING
                                                             whatever the clocks say; within a
                                                             stage the newer timestamp, then
                                                             ``STATE_PRECEDENCE``
                                                             (:func:`~exporter.events.table.
                                                             state_order`)
worker_seen_at, hostname          received, started and      newer worker_seen_at (the latest
                                  every event after          worker to report on the task)
result, result_truncated          succeeded                  first
runtime                           succeeded                  first
exception_at, exception_type,     failed, retried            newer exception_at (the last
exception_message(_truncated),                               exception: a retried task that
traceback(_truncated)                                        then succeeds keeps it)
================================  =========================  ===================================

Repairs (:mod:`exporter.repair`) reach the history as the model's synthetic records: shaped like
the event that was lost (``task-succeeded`` stamped with the result's ``date_done``, ``task-failed``
with the exception repr and traceback the result backend stored, ``task-started`` stamped with the
running task's ``time_start``, ``task-received`` for a task a worker holds) and carrying
``state_source`` (``result_backend``, ``workers``). They merge by the same rules: the state and
its source move together, so a real event that arrives later and wins the state order makes the
source ``events`` again, and the fields a repair knows fill what no event said. A repair record
also gives the row its ``queue`` (``result_extended``) and never a ``received_at`` (no source
knows when a worker received the task).

Derived by :func:`finalize`: ``finished_at`` = ``state_ts`` when the state is terminal
(:data:`TERMINAL_STATES`), else ``None``; ``runtime`` for FAILURE (and REVOKED with
``revoke_reason == "terminated"``) = ``finished_at − started_at`` (``task-failed`` carries no
runtime), for SUCCESS the event's ``runtime`` (else the same difference), otherwise ``None``;
``state_source`` = ``events`` when no repair set the state.

Times are float seconds since the epoch, UTC, as Celery sends them (``timestamp``; ``eta`` and
``expires`` are parsed from ISO 8601). ``task-sent``'s ``hostname`` is the *publisher* and is
not taken as the worker. Timestamps come from different hosts, so the state follows the
execution's stage first and timestamps only within a stage: with a worker's clock behind the
producer's, the row still goes PENDING → RECEIVED → … → SUCCESS.

Why one module of this size: it is the rule table of the history (which event may set which
column, which value wins) with the parsers of the fields it caps and cleans; every function is
pure, and the differential and property tests read it as one unit.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from math import isfinite
from operator import itemgetter
from typing import Any, TypeGuard

from exporter.config import DEFAULT_HISTORY_MAX_FIELD_BYTES
from exporter.events.canvas import CHORD_UNLOCK, chord_group_id
from exporter.events.parse import (
    TRACEBACK_TAIL_CHARS,
    WRAPPER_EXCEPTIONS,
    as_int,
    as_number,
    exception_class,
    parse_eta,
    traceback_exception,
)
from exporter.events.table import EVENT_STATE, SOURCE_EVENTS, TERMINAL_STATES, state_order

Row = dict[str, Any]

#: States after which no more events are expected; ``finished_at`` is set for them.
#: Events sent by the worker running the task (their ``hostname`` is that worker).
WORKER_EVENTS = frozenset(EVENT_STATE) - {"task-sent"}
#: Longest stored identifier (task name, queue, hostname, ids, exception class), characters.
MAX_IDENTIFIER_CHARS = 255
#: Default cap of args, kwargs, result, exception message and traceback, UTF-8 bytes.

_FIRST, _MIN, _MAX, _NEWEST = "first", "min", "max", "newest"


@dataclass(frozen=True)
class MergeRule:
    """How the ``fields`` of two rows combine; ``fields[0]`` leads (its presence decides).

    ``kind``: ``first`` (keep the stored group, fill it when empty), ``min``/``max`` (one
    field), ``newest`` (take the incoming group when ``order(incoming) > order(stored)``).
    """

    kind: str
    fields: tuple[str, ...]
    order: Callable[[Mapping[str, Any]], Any] | None = None


def _state_order(row: Mapping[str, Any]) -> tuple[int, float, int]:
    return state_order(row["state"], row["state_ts"])


MERGE_RULES: tuple[MergeRule, ...] = (
    MergeRule(_FIRST, ("name",)),
    MergeRule(_FIRST, ("args", "args_truncated")),
    MergeRule(_FIRST, ("kwargs", "kwargs_truncated")),
    MergeRule(_FIRST, ("queue",)),
    MergeRule(_FIRST, ("routing_key",)),
    MergeRule(_FIRST, ("exchange",)),
    MergeRule(_FIRST, ("parent_id",)),
    MergeRule(_FIRST, ("root_id",)),
    MergeRule(_FIRST, ("group_id",)),
    MergeRule(_FIRST, ("expires",)),
    MergeRule(_FIRST, ("priority",)),
    MergeRule(_MIN, ("sent_at",)),
    MergeRule(_MAX, ("received_at",)),
    MergeRule(_MAX, ("started_at",)),
    MergeRule(_MAX, ("eta",)),
    MergeRule(_MAX, ("retries",)),
    MergeRule(_NEWEST, ("state", "state_ts", "revoke_reason", "revoke_signal", "state_source"),
              _state_order),
    MergeRule(_NEWEST, ("worker_seen_at", "hostname"), itemgetter("worker_seen_at")),
    MergeRule(_FIRST, ("result", "result_truncated")),
    MergeRule(_FIRST, ("runtime",)),
    MergeRule(_NEWEST, ("exception_at", "exception_type", "exception_message",
                        "exception_message_truncated", "traceback", "traceback_truncated"),
              itemgetter("exception_at")),
)
#: Lead field → ``(kind, the other fields, order)`` of its rule (tuples: :func:`merge_into` runs
#: per event).
_RULE_BY_LEAD = {rule.fields[0]: (rule.kind, rule.fields[1:], rule.order) for rule in MERGE_RULES}
#: Every column an event can set (the writer owns these; action columns are left alone).
EVENT_FIELDS: tuple[str, ...] = tuple(f for rule in MERGE_RULES for f in rule.fields)
#: Columns :func:`finalize` derives.
DERIVED_FIELDS: tuple[str, ...] = ("finished_at",)
#: Defaults of the NOT NULL columns among :data:`EVENT_FIELDS` when no event set them.
FIELD_DEFAULTS: Mapping[str, Any] = {
    "retries": 0, "args_truncated": False, "kwargs_truncated": False,
    "result_truncated": False, "exception_message_truncated": False,
    "traceback_truncated": False, "state_source": SOURCE_EVENTS,
}


def _clean(text: str) -> str:
    r"""Make ``text`` storable everywhere: NUL (PostgreSQL rejects it) becomes ``\x00``, lone
    surrogates (not encodable as UTF-8) become ``?``.
    """
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def cap_text(value: Any, max_bytes: int) -> tuple[str | None, bool]:
    """Cap ``value`` at ``max_bytes`` bytes of UTF-8, cut on a character boundary.

    A non-string value is stored as its ``repr``; NUL and lone surrogates are replaced (see
    :func:`_clean`). Returns ``(text, truncated)``; ``None`` gives ``(None, False)``.
    """
    if (type(value) is str and len(value) <= max_bytes and value.isascii()
            and "\x00" not in value):  # the usual case: storable as it is
        return value, False
    if value is None:
        return None, False
    text = _clean(value if isinstance(value, str) else repr(value))
    if len(text) * 4 <= max_bytes:  # at most 4 bytes per character: no need to encode
        return text, False
    if text.isascii():
        return (text, False) if len(text) <= max_bytes else (text[:max_bytes], True)
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text, False
    # A cut inside a multi-byte sequence leaves an incomplete tail; "ignore" drops it.
    return data[:max_bytes].decode("utf-8", "ignore"), True


def _head(text: str, max_bytes: int) -> str:
    """The longest start of ``text`` of at most ``max_bytes`` UTF-8 bytes."""
    return text.encode("utf-8")[:max_bytes].decode("utf-8", "ignore")


def _tail(text: str, max_bytes: int) -> str:
    """The longest end of ``text`` of at most ``max_bytes`` UTF-8 bytes."""
    data = text.encode("utf-8")
    return data[len(data) - max_bytes:].decode("utf-8", "ignore") if max_bytes else ""


#: Share of a cut traceback's bytes kept from its start; the rest (the frames nearest the
#: error and the line naming it) from its end.
TRACEBACK_HEAD_SHARE = 0.4


def cap_traceback(value: Any, max_bytes: int, original_chars: int | None = None
                  ) -> tuple[str | None, bool]:
    r"""Cap a traceback at ``max_bytes`` bytes of UTF-8 keeping its head *and* its tail — the
    last line names the error (``RecursionError: …``) — joined by a marker saying how much was
    cut: ``"\n... [12,345 characters cut] ...\n"``. ``original_chars``: the length of the
    whole traceback, cleaned, when :func:`precap_event` shortened its middle (the marker counts
    from it, so both give the same text). Cleaned as :func:`cap_text` does; returns ``(text,
    truncated)``.
    """
    if value is None:
        return None, False
    text = _clean(value if isinstance(value, str) else repr(value))
    if len(text) * 4 <= max_bytes or len(text.encode("utf-8")) <= max_bytes:
        return text, False
    total = max(original_chars or 0, len(text))
    marker = f"\n... [{total:,} characters cut] ...\n"  # an upper bound of its final length
    budget = max(0, max_bytes - len(marker.encode()))
    head = _head(text, int(budget * TRACEBACK_HEAD_SHARE))
    tail = _tail(text, budget - len(head.encode("utf-8")))
    return f"{head}\n... [{total - len(head) - len(tail):,} characters cut] ...\n{tail}", True


#: Event fields that :func:`record_from_event` caps at ``max_field_bytes`` (``traceback`` with
#: :func:`cap_traceback`: head and tail, see :func:`precap_event`).
CAPPED_FIELDS = ("args", "kwargs", "result")
#: Characters of an ``exception`` repr kept by :func:`precap_event` at least (the message is
#: parsed out of it, see :func:`exception_message`).
EXCEPTION_KEEP_CHARS = 65536
_PRECAPPED = (*CAPPED_FIELDS, "traceback", "exception")
#: Key :func:`precap_event` adds to an event whose traceback it shortened: the original length.
TRACEBACK_CHARS = "traceback_chars"


def precap_event(event: MutableMapping[str, Any], max_field_bytes: int) -> None:
    """Shorten, in place, text fields far longer than what the history keeps, so a queued event
    holds kilobytes however large its arguments are (a producer may send a 10 MB repr).

    ``args``/``kwargs``/``result`` strings longer than ``max_field_bytes + 1`` characters are
    cut there: :func:`cap_text` then gives the same text and truncated flag as for the whole
    string (UTF-8 needs at least one byte per character, and cleaning works character by
    character). A ``traceback`` keeps that head and as many characters of its end (at least
    :data:`~exporter.events.parse.TRACEBACK_TAIL_CHARS`: the line naming the error is the last),
    and its original length in ``event[TRACEBACK_CHARS]`` for :func:`cap_traceback`'s marker;
    ``exception`` keeps ``max(EXCEPTION_KEEP_CHARS,
    max_field_bytes + 1)`` characters (its class name and the start of its message). Cheap:
    a length check per field; only the oversized are sliced.
    """
    limit = max_field_bytes + 1
    for name in _PRECAPPED:
        if name not in event:
            continue
        value = event[name]
        if isinstance(value, str) and len(value) > limit:  # all three cuts need this
            if name == "traceback":
                keep = max(limit, TRACEBACK_TAIL_CHARS)
                if len(value) > limit + keep:
                    event[name] = value[:limit] + value[-keep:]
                    event[TRACEBACK_CHARS] = len(_clean(value))
            elif name == "exception":
                if len(value) > EXCEPTION_KEEP_CHARS:
                    event[name] = value[:max(EXCEPTION_KEEP_CHARS, limit)]
            else:
                event[name] = value[:limit]


def _identifier(value: Any) -> str | None:
    if (type(value) is str and len(value) <= MAX_IDENTIFIER_CHARS and value.isascii()
            and "\x00" not in value):  # the usual case, already storable
        return value or None
    if value is None or value == "":
        return None
    text = value if isinstance(value, str) else str(value)
    return _clean(text[:MAX_IDENTIFIER_CHARS])


_INT32_LIMIT = 2 ** 31


def _int32(value: Any) -> int | None:
    """``value`` when it is an int that fits the INTEGER columns (32 bits), else ``None``."""
    if type(value) is int:  # the usual case, without the general check's call
        return value if -_INT32_LIMIT <= value < _INT32_LIMIT else None
    return as_int(value, 32)


_CALL_RE = re.compile(r"^\s*[A-Za-z_][\w.]*\((.*)\)\s*$", re.DOTALL)
#: A call repr cut inside its quoted message (no closing quote and parenthesis).
_OPEN_CALL_RE = re.compile(r"^\s*[A-Za-z_][\w.]*\((['\"])(.*)$", re.DOTALL)
_COLON_RE = re.compile(r"^\s*[A-Za-z_][\w.]*\s*:\s?(.*)$", re.DOTALL)
_QUOTED_MAX = 100_000
#: A quoted string whose characters are printable ASCII but quotes and backslashes: its
#: ``ast.literal_eval`` is what is between the quotes (no escape, no line break, no NUL).
_PLAIN_QUOTED_RE = re.compile(r"'[ !#-&(-\[\]-~]*'|\"[ !#-&(-\[\]-~]*\"")


def exception_message(text: Any) -> str | None:
    """The message part of the ``exception`` field of ``task-failed``/``task-retried``.

    Celery sends ``safe_repr(exc)``: ``"ValueError('boom')"`` → ``boom``;
    ``"KeyError('a', 1)"`` → ``'a', 1``; ``"ValueError()"`` → ``""``;
    ``"Timeout: took 5s"`` → ``took 5s``; a repr cut inside its message
    (``"ValueError('xxx"``) → ``xxx``; anything else is returned whole. ``None`` or a
    non-string gives ``None``.
    """
    return _parse_exception(text)[0]


def _parse_exception(text: Any) -> tuple[str | None, bool]:
    """``(exception_message(text), cut)``: ``cut`` when ``text`` is a repr cut inside its quoted
    message (by :func:`precap_event`): ``ValueError('xxx…`` with no closing quote and
    parenthesis.
    """
    if not isinstance(text, str):
        return None, False
    match = _CALL_RE.match(text)
    if match:
        inner = match.group(1).strip()
        if (len(inner) >= 2 and len(inner) <= _QUOTED_MAX and inner[0] == inner[-1]
                and inner[0] in "'\""):
            if _PLAIN_QUOTED_RE.fullmatch(inner):  # "ValueError('boom')": no parser needed
                return inner[1:-1], False
            try:
                value = ast.literal_eval(inner)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                return inner, False
            return (value if isinstance(value, str) else inner), False
        return inner, False
    match = _OPEN_CALL_RE.match(text)
    if match:  # cut inside its message: the message without its quote
        return match.group(2), True
    match = _COLON_RE.match(text)
    return (match.group(1) if match else text), False


def _storable_id(value: Any) -> TypeGuard[str]:
    """A task id the primary key can hold: 1..255 characters, no NUL, encodable as UTF-8."""
    if type(value) is str and value.isascii():  # the usual case: no lone surrogates
        return 0 < len(value) <= MAX_IDENTIFIER_CHARS and "\x00" not in value
    return (isinstance(value, str) and 0 < len(value) <= MAX_IDENTIFIER_CHARS
            and "\x00" not in value and _clean(value) == value)


def _revoke_reason(event: Mapping[str, Any]) -> str:
    if event.get("expired"):
        return "expired"
    if event.get("terminated"):
        return "terminated"
    return "revoked"


_NOTHING: Mapping[str, Any] = {}
#: Event fields :func:`record_from_event` reads whatever the event's type.
_ANY_EVENT_FIELDS = frozenset({"state_source", "name", "parent_id", "root_id", "args", "kwargs",
                               "eta", "expires", "retries", "priority"})


def record_from_event(event: Mapping[str, Any],
                      max_field_bytes: int = DEFAULT_HISTORY_MAX_FIELD_BYTES,
                      known: Mapping[str, Any] | None = None) -> tuple[str, Row] | None:
    """Turn one Celery task event into ``(task_id, partial row)``; ``None`` when unusable.

    Unusable: not a task event type, no finite ``timestamp``, or a ``uuid`` that is not a
    string of 1..255 characters without NUL or lone surrogates.
    Args, kwargs, result, exception message and traceback are capped at ``max_field_bytes``
    (UTF-8) with their ``*_truncated`` flag set; identifiers at 255 characters. Only fields the
    event carries (not ``None``) appear in the partial row; see the module table.

    ``known``: the row the record is going to be merged into, if any. ``name``, ``parent_id``,
    ``root_id``, ``args`` and ``kwargs`` (rule ``first``: merging them into a row that holds
    them changes nothing) are then left out when ``known`` holds them — the fields every
    ``task-received`` repeats after its ``task-sent``. ``merge_into(known, record)`` gives the
    same row either way.
    """
    get = event.get
    event_type = get("type")
    state = EVENT_STATE.get(event_type) if isinstance(event_type, str) else None
    task_id = get("uuid")
    timestamp = get("timestamp")
    if type(timestamp) is not float or not isfinite(timestamp):  # a finite float needs no call
        timestamp = as_number(timestamp)
    if state is None or timestamp is None or not _storable_id(task_id):
        return None
    row: Row = {"state": state, "state_ts": timestamp}
    source = None
    # Fields any event may carry; task-started, -succeeded and -failed carry none of them, and
    # one check (in C) skips them all.
    if not _ANY_EVENT_FIELDS.isdisjoint(event):
        have = _NOTHING.get if known is None else known.get
        source = get("state_source")
        if source is not None:  # a repair record (exporter.repair), not a Celery event
            row["state_source"] = _identifier(source)
            queue = _identifier(get("queue"))
            if queue is not None:
                row["queue"] = queue
        # Absent fields are skipped before any conversion.
        for field in ("name", "parent_id", "root_id"):
            value = get(field)
            if (value is not None and have(field) is None
                    and (value := _identifier(value)) is not None):
                row[field] = value
        if get("name") == CHORD_UNLOCK and have("group_id") is None:
            group_id = _identifier(chord_group_id(CHORD_UNLOCK, get("args")))
            if group_id is not None:
                row["group_id"] = group_id
        for field, flag in (("args", "args_truncated"), ("kwargs", "kwargs_truncated")):
            value = get(field)
            if value is not None and have(field) is None:
                row[field], row[flag] = cap_text(value, max_field_bytes)
        for field in ("eta", "expires"):
            value = get(field)
            if value is not None and (value := parse_eta(value)) is not None:
                row[field] = value
        for field in ("retries", "priority"):
            value = get(field)
            if value is not None and (value := _int32(value)) is not None:
                row[field] = value
    if event_type == "task-sent":
        row["sent_at"] = timestamp
        for field in ("routing_key", "exchange"):
            value = get(field)
            if value is not None and (value := _identifier(value)) is not None:
                row[field] = value
        queue = _identifier(get("queue")) or row.get("routing_key")
        if queue is not None:
            row["queue"] = queue
    elif event_type == "task-received":
        if source is None:
            row["received_at"] = timestamp
    elif event_type == "task-started":
        row["started_at"] = timestamp
    elif event_type == "task-succeeded":
        row["result"], row["result_truncated"] = cap_text(get("result"), max_field_bytes)
        runtime = get("runtime")
        if type(runtime) is not float or not isfinite(runtime):
            runtime = as_number(runtime)
        if runtime is not None:
            row["runtime"] = max(0.0, runtime)
    elif event_type in ("task-failed", "task-retried"):
        exception, traceback = get("exception"), get("traceback")
        text, cut = _parse_exception(exception)
        exception_type = exception_class(exception)
        if exception_type in WRAPPER_EXCEPTIONS:  # the real exception ends the traceback
            real = traceback_exception(traceback)
            if real is not None:
                exception_type, text = real
        message, message_cut = cap_text(text, max_field_bytes)
        traceback, traceback_cut = cap_traceback(traceback, max_field_bytes,
                                                 get(TRACEBACK_CHARS))
        row.update(exception_at=timestamp, exception_type=_identifier(exception_type),
                   exception_message=message, exception_message_truncated=message_cut or cut,
                   traceback=traceback, traceback_truncated=traceback_cut)
    elif state == "REVOKED":
        row["revoke_reason"] = _revoke_reason(event)
        row["revoke_signal"] = _int32(get("signum"))
    if event_type in WORKER_EVENTS and (hostname := _identifier(get("hostname"))) is not None:
        row["worker_seen_at"] = timestamp
        row["hostname"] = hostname
    return task_id, row


def merge_into(target: MutableMapping[str, Any], incoming: Mapping[str, Any]) -> None:
    """Merge the partial row ``incoming`` into ``target`` (changed in place) by
    :data:`MERGE_RULES`.

    ``target`` may be a partial row or a full stored row (absent and ``None`` mean the same);
    keys that are no event field (action columns) are left alone. The result does not depend on
    the order in which partial rows are merged.
    """
    rules = _RULE_BY_LEAD
    for lead, value in incoming.items():
        rule = rules.get(lead)
        if rule is None or value is None:
            continue
        kind, others, order = rule
        current = target.get(lead)
        if current is not None:
            if kind is _FIRST:
                continue
            if kind is not _NEWEST:  # min, max: one field
                if value < current if kind is _MIN else value > current:
                    target[lead] = value
                continue
            assert order is not None
            if not order(incoming) > order(target):
                continue
        # The incoming group fills an empty one or is newer: it moves as a whole.
        target[lead] = value
        for field in others:
            target[field] = incoming.get(field)


def merge(*rows: Mapping[str, Any]) -> Row:
    """Merge partial rows into a new dict (see :func:`merge_into`); the inputs are not changed."""
    result: Row = {}
    for row in rows:
        merge_into(result, row)
    return result


def _elapsed(row: Mapping[str, Any]) -> float | None:
    started, finished = row.get("started_at"), row.get("finished_at")
    if started is None or finished is None:
        return None
    return max(0.0, finished - started)


def finalize(row: MutableMapping[str, Any]) -> None:
    """Derive ``finished_at`` and ``runtime`` of a merged row in place (see the module docs) and
    fill the defaults of NOT NULL columns (:data:`FIELD_DEFAULTS`).

    Raises:
        KeyError: the row has no ``state``/``state_ts`` (every event sets them).

    """
    state = row["state"]
    row["finished_at"] = row["state_ts"] if state in TERMINAL_STATES else None
    if state == "SUCCESS":
        if row.get("runtime") is None:
            row["runtime"] = _elapsed(row)
    elif state == "FAILURE" or (state == "REVOKED" and row.get("revoke_reason") == "terminated"):
        row["runtime"] = _elapsed(row)
    else:
        row["runtime"] = None
    for field, default in FIELD_DEFAULTS.items():
        if row.get(field) is None:
            row[field] = default
