"""Pure parsers of the actions' parameters (query strings, CLI options, bulk filters).

Each raises :class:`~actions.errors.InvalidParameter` naming the parameter, so a bad value is a
400 at the API and a one-line error on the command line, never a 500.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any, TypeVar

from actions.errors import InvalidParameter
from exporter.config import parse_duration
from exporter.history import STATES, InvalidCursor
from exporter.history.queries import decode_cursor

T = TypeVar("T")

#: Latest instant accepted (9999-12-31T23:59:59Z), seconds since the epoch.
MAX_EPOCH = 253_402_300_799.0
#: Longest window of the statistics: ten years, in seconds.
MAX_WINDOW = 10 * 366 * 86400.0
#: Friendly spellings of Celery states (``--state failed``).
STATE_ALIASES = {"FAILED": "FAILURE", "SUCCEEDED": "SUCCESS", "RUNNING": "STARTED",
                 "RETRIED": "RETRY", "RETRYING": "RETRY"}
#: Identifiers (task ids, names, queues): 1..255 characters, no control characters.
IDENTIFIER_PATTERN = r"^[^\x00-\x1f\x7f]{1,255}$"
#: :data:`IDENTIFIER_PATTERN` in words, as an error says it.
IDENTIFIER_RULE = "1 to 255 characters, no control characters"
_IDENTIFIER = re.compile(r"[^\x00-\x1f\x7f]{1,255}")
_EPOCH = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def parse_time(text: str, parameter: str) -> float:
    """An instant as ISO 8601 (``2024-05-01T12:00:00Z``; no offset means UTC) or seconds since
    the epoch (``1714564800``, ``1714564800.5``).

    Returns:
        Seconds since the epoch, 0 ≤ value ≤ :data:`MAX_EPOCH`.

    Raises:
        InvalidParameter: neither form, or out of range.

    """
    value = text.strip()
    seconds: float | None = None
    if _EPOCH.fullmatch(value):
        seconds = float(value)
    else:
        try:
            parsed = datetime.fromisoformat(value)
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=timezone.utc)
            seconds = parsed.timestamp()
        except (ValueError, OverflowError):
            seconds = None
    if seconds is None or not math.isfinite(seconds) or not 0 <= seconds <= MAX_EPOCH:
        raise InvalidParameter(
            f"{parameter}: an ISO 8601 time (2024-05-01T12:00:00Z) or seconds since the epoch "
            f"between 0 and {MAX_EPOCH:.0f}", parameter=parameter)
    return seconds


def parse_instant(value: str | float, parameter: str) -> float:
    """:func:`parse_time` for text; a number is taken as seconds since the epoch (same range).

    Raises:
        InvalidParameter: as :func:`parse_time`.

    """
    if isinstance(value, str):
        return parse_time(value, parameter)
    return parse_time(repr(float(value)), parameter)


def parse_window(text: str, parameter: str = "window") -> float:
    """A duration such as ``1h``, ``30m``, ``7d`` or ``3600`` (seconds).

    Raises:
        InvalidParameter: not a duration, 0, or longer than ten years.

    """
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise InvalidParameter(f"{parameter}: {exc}", parameter=parameter) from None
    if not 0 < seconds <= MAX_WINDOW:
        raise InvalidParameter(f"{parameter}: greater than 0 and at most 10 years",
                               parameter=parameter)
    return seconds


def parse_states(values: Iterable[str], parameter: str = "state") -> list[str] | None:
    """Celery states from repeated and/or comma-separated values, any case, with aliases
    (``failed`` → FAILURE, ``succeeded`` → SUCCESS, ``running`` → STARTED).

    Returns:
        The states in first-seen order, or ``None`` when no value was given (all states).

    Raises:
        InvalidParameter: an unknown state.

    """
    states: list[str] = []
    for value in values:
        for part in value.split(","):
            word = part.strip().upper()
            if not word:
                continue
            state = STATE_ALIASES.get(word, word)
            if state not in STATES:
                raise InvalidParameter(
                    f"{parameter}: unknown state {part.strip()[:40]!r}; one of "
                    f"{', '.join(STATES)} (or failed, succeeded, running)",
                    parameter=parameter)
            if state not in states:
                states.append(state)
    return states or None


def check_identifier(value: str | None, parameter: str) -> str | None:
    """``value`` when it is a plausible task id / name / queue (1..255 characters, no control
    characters), ``None`` when ``None``.

    Raises:
        InvalidParameter: anything else.

    """
    if value is None:
        return None
    if not _IDENTIFIER.fullmatch(value):
        raise InvalidParameter(f"{parameter}: {IDENTIFIER_RULE}", parameter=parameter)
    return value


def check_cursor(cursor: str | None, parameter: str = "cursor") -> str | None:
    """``cursor`` when it is a ``next_cursor`` a list returned, ``None`` when ``None``.

    Raises:
        InvalidParameter: anything else.

    """
    if cursor is None:
        return None
    try:
        decode_cursor(cursor)
    except InvalidCursor:
        raise InvalidParameter(f"{parameter}: not a cursor this API returned (pass "
                               "next_cursor unchanged)", parameter=parameter) from None
    return cursor


def check_range(since: float | None, until: float | None) -> None:
    """Raises :class:`InvalidParameter` when ``until`` is not after ``since``."""
    if since is not None and until is not None and until <= since:
        raise InvalidParameter("until: must be later than since", parameter="until")


def given(value: str | None) -> str | None:
    """``value``, or ``None`` when empty: an empty filter (``name=``) is one not given."""
    return value or None


class ParameterCheck:
    """Runs parsers and collects their :class:`InvalidParameter` errors.

    One 400 then names every bad parameter (``state=BOGUS&since=notadate``: both)::

        check = ParameterCheck()
        states = check(parse_states, values)
        since = check(parse_time, text, "since")
        check.done()  # raises when any failed
    """

    def __init__(self) -> None:
        self.problems: list[InvalidParameter] = []

    def __call__(self, parse: Callable[..., T], *args: Any) -> T | None:
        """``parse(*args)``, or ``None`` (its error kept) when it raises InvalidParameter."""
        try:
            return parse(*args)
        except InvalidParameter as exc:
            self.problems.append(exc)
            return None

    def done(self, location: str = "query") -> None:
        """Raise one :class:`InvalidParameter` for every error kept: ``detail`` joins theirs
        (``state: unknown state 'BOGUS'…; since: an ISO 8601 time…``), ``parameter`` is the
        first one's, and ``errors`` lists ``{"loc": [location, parameter], "msg": ...}`` per
        parameter, as FastAPI's validation errors are listed.

        Raises:
            InvalidParameter: at least one parser failed.

        """
        if not self.problems:
            return
        errors = []
        for problem in self.problems:
            name = str(problem.extra.get("parameter", ""))
            errors.append({"loc": [location, name],
                           "msg": problem.detail.removeprefix(f"{name}: ")})
        raise InvalidParameter("; ".join(p.detail for p in self.problems),
                               parameter=errors[0]["loc"][1], errors=errors)
