"""Pure checks and parsers for Celery event dicts and worker replies, shared by the consumer,
the model, the poller and the history.

An event is the dict Celery's ``EventDispatcher`` publishes (``celery.events.event.Event``):
``type``, ``timestamp`` (worker or client ``time.time()``, seconds since the epoch, UTC),
``utcoffset``, ``pid``, ``clock``, ``hostname`` and the type's own fields. The consumer adds
``local_received`` (exporter clock). Timestamps are used as sent: ``time.time()`` is already UTC,
so Celery's ``utcoffset`` "localisation" (which shifts epoch values by the zone difference) is
not applied.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import Any

from exporter.events.table import KNOWN_TYPES, TASK_EVENT_TYPES, UNKNOWN

#: Fields whose type is checked when present: field → accepted Python types.
_OPTIONAL_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "queue": (str,),
    "routing_key": (str,),
    "retries": (int,),
    "runtime": (int, float),
    "active": (int,),
    "processed": (int,),
    "freq": (int, float),
}
_OPTIONAL_FIELDS = frozenset(_OPTIONAL_FIELD_TYPES)
_EXCEPTION_RE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*[(:]|^\s*([A-Za-z_][\w.]*)\s*$")
#: Classes Celery reports in ``exception`` instead of the real one: billiard's pickling wrapper
#: (hard time limits and other errors raised in the pool's parent). The real exception is the
#: last line of the event's ``traceback``.
WRAPPER_EXCEPTIONS = frozenset({"ExceptionWithTraceback", "billiard.einfo.ExceptionWithTraceback"})
_TRACEBACK_LINE_RE = re.compile(r"^([A-Za-z_][\w.]*)(?::[ ]?(.*))?$", re.DOTALL)
#: Characters of the end of a traceback searched for its last line.
TRACEBACK_TAIL_CHARS = 4096

class MalformedEvent(ValueError):
    """An event that cannot be used; ``reason`` is a short label value for the metric."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def finite(value: Any) -> bool:
    """Whether the int or float ``value`` is a finite float: not NaN, not infinite, and (an int
    that JSON or YAML allows) not beyond the float range.
    """
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float: 2**1100
        return False


def as_number(value: Any) -> float | None:
    """``value`` as a float when it is an int or float (not a bool) that is a finite float
    (:func:`finite`), else ``None``: the one coercion of numeric event, reply and row fields.
    """
    if type(value) is float:  # the common case, first
        return value if math.isfinite(value) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not finite(value):
        return None
    return float(value)


def as_int(value: Any, bits: int | None = None) -> int | None:
    """``value`` when it is an int (not a bool) and, with ``bits``, fits a signed integer of
    that many bits (an SQL INTEGER column: 32), else ``None``.
    """
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    if bits is not None and not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
        return None
    return value


def check_event(body: Any) -> str:
    """Check that ``body`` is an event the model can use and return its type.

    Required: a dict with a known ``type``, a finite numeric ``timestamp``; task events a
    non-empty string ``uuid``; worker events a non-empty string ``hostname``. Optional fields in
    ``_OPTIONAL_FIELD_TYPES`` must have the right type when present and not ``None`` (numbers
    finite).

    Raises:
        MalformedEvent: reason ``not_a_dict``, ``missing_type``, ``unknown_type``,
            ``bad_timestamp``, ``missing_uuid``, ``missing_hostname`` or ``bad_field``.

    """
    if not isinstance(body, dict):
        raise MalformedEvent("not_a_dict", type(body).__name__)
    event_type = body.get("type")
    if not isinstance(event_type, str) or not event_type:
        raise MalformedEvent("missing_type")
    if event_type not in KNOWN_TYPES:
        raise MalformedEvent("unknown_type", event_type[:100])
    timestamp = body.get("timestamp")
    # A finite float is the common case; everything else goes through the full check.
    if (type(timestamp) is not float or not math.isfinite(timestamp)) and as_number(
            timestamp) is None:
        raise MalformedEvent("bad_timestamp", type(timestamp).__name__)
    if event_type in TASK_EVENT_TYPES:
        uuid = body.get("uuid")
        if not isinstance(uuid, str) or not uuid:
            raise MalformedEvent("missing_uuid", event_type)
    else:
        hostname = body.get("hostname")
        if not isinstance(hostname, str) or not hostname:
            raise MalformedEvent("missing_hostname", event_type)
    for key in _OPTIONAL_FIELDS.intersection(body):  # the few present, found in C
        types = _OPTIONAL_FIELD_TYPES[key]
        value = body[key]
        if value is not None and (
            not isinstance(value, types) or isinstance(value, bool)
            # An infinite runtime would make the histogram's _sum infinite for good.
            or (float in types and not finite(value))
        ):
            raise MalformedEvent("bad_field", key)
    return event_type


def traceback_exception(traceback: Any) -> tuple[str, str] | None:
    """``(class name, message)`` from the last line of a Python traceback text
    (``"billiard.exceptions.TimeLimitExceeded: TimeLimitExceeded(1,)"`` →
    ``("TimeLimitExceeded", "TimeLimitExceeded(1,)")``: the class without its module, as
    ``repr`` names it); ``None`` when the text is not a traceback or has no such line.
    """
    if not isinstance(traceback, str) or not traceback.lstrip().startswith("Traceback"):
        return None
    lines = traceback[-TRACEBACK_TAIL_CHARS:].rstrip().rsplit("\n", 1)
    match = _TRACEBACK_LINE_RE.match(lines[-1].strip())
    if not match or match.group(1) == "Traceback":
        return None
    return match.group(1).rsplit(".", 1)[-1], match.group(2) or ""


def exception_class(text: Any, traceback: Any = None) -> str:
    """Exception class name from the ``exception`` field of ``task-failed``.

    Celery sends ``safe_repr(exc)``: ``"ValueError('boom')"`` → ``ValueError``;
    ``"billing.errors.CardDeclined('x')"`` → ``billing.errors.CardDeclined``. Anything that does
    not start with a dotted identifier (or is not a string) gives ``"unknown"``. A wrapper
    (:data:`WRAPPER_EXCEPTIONS`, e.g. a hard time limit) is replaced by the class on the last
    line of ``traceback`` (``TimeLimitExceeded``) when there is one.
    """
    if not isinstance(text, str):
        return UNKNOWN
    match = _EXCEPTION_RE.match(text[:300])
    if not match:
        return UNKNOWN
    name = match.group(1) or match.group(2)
    if name in WRAPPER_EXCEPTIONS:
        real = traceback_exception(traceback)
        if real is not None:
            return real[0]
    return name


def parse_eta(value: Any) -> float | None:
    """Seconds since the epoch from the ISO 8601 ``eta`` field of ``task-sent``/``task-received``.

    A naive datetime is taken as UTC (Celery's default ``enable_utc``). ``None``, an empty or
    unparseable value gives ``None``.
    """
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()
