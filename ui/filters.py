"""The filters of list pages, read from the URL so that a link (from an alert, a Grafana
table, a colleague) opens the same list: ``?name=app.charge&queue=b&exception=ValueError&
since=2024-05-01T12:00&until=…``. An empty field means "any".

Values are checked by the action API's own parsers (:mod:`actions.params`): a bad one raises
:class:`~actions.errors.InvalidParameter`, which the app shows as a 400 page naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Query

from actions.params import check_identifier, check_range, parse_time

Text = Annotated[str | None, Query(max_length=255)]
Time = Annotated[str | None, Query(max_length=64, description="ISO 8601 (UTC without an "
                                                              "offset) or epoch seconds")]


@dataclass(frozen=True)
class ListFilter:
    """Exact ``name``, ``queue``, ``exception`` class, and state-change time range
    ``since <= t < until`` (epoch seconds, ``None``: open); ``text`` keeps the values as typed,
    for the form and for links.
    """

    name: str | None
    queue: str | None
    exception: str | None
    since: float | None
    until: float | None
    text: tuple[tuple[str, str], ...]

    def query(self, **more: str | None) -> dict[str, str]:
        """The filter as URL query parameters, with ``more`` added (``None`` values left
        out).
        """
        values = dict(self.text)
        values.update({key: value for key, value in more.items() if value is not None})
        return {key: value for key, value in values.items() if value}


def _blank(value: str | None) -> str | None:
    return value.strip() or None if value is not None else None


def list_filter(name: Text = None, queue: Text = None, exception: Text = None,
                since: Time = None, until: Time = None) -> ListFilter:
    """Dependency: the :class:`ListFilter` of the query string.

    Raises:
        InvalidParameter: a name/queue/exception with control characters, a time that is
            neither ISO 8601 nor epoch seconds, or ``until`` not after ``since``.

    """
    name, queue, exception = _blank(name), _blank(queue), _blank(exception)
    since, until = _blank(since), _blank(until)
    start = parse_time(since, "since") if since else None
    end = parse_time(until, "until") if until else None
    check_range(start, end)
    return ListFilter(
        name=check_identifier(name, "name"), queue=check_identifier(queue, "queue"),
        exception=check_identifier(exception, "exception"), since=start, until=end,
        text=tuple((key, value) for key, value in (
            ("name", name), ("queue", queue), ("exception", exception), ("since", since),
            ("until", until)) if value))
