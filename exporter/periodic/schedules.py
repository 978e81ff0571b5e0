"""Periodic entries and their schedules, parsed from what each source stores (pure, no I/O).

An :class:`Entry` is one periodic task as a beat scheduler knows it: its name, the task it
sends, its arguments when the source says, and its schedule as one of Celery's own schedule
classes (:class:`celery.schedules.schedule` for intervals, :class:`~celery.schedules.crontab`,
:class:`~celery.schedules.solar`), so that "when is the next run after this one" has Celery's
answer (:func:`next_run`). The parsers take what the sources hold:

- :func:`entries_from_beat_schedule`: an app's ``beat_schedule`` mapping (``--app``);
- :func:`entry_from_redbeat`: the ``definition`` field of a RedBeat key (JSON, decoded by
  RedBeat's own decoder);
- :func:`entry_from_django_row`: a row of django-celery-beat's ``periodictask`` table joined
  with its interval, crontab or solar row;
- :func:`expected_entry`: ``--expect TASK=INTERVAL`` (a task that must run at least that
  often).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from celery import Celery
from celery.schedules import BaseSchedule, crontab, maybe_schedule, schedule, solar
from celery.utils.saferepr import saferepr

#: The sources an entry can come from (the ``source`` label of the source health family).
SOURCES = ("app", "redbeat", "django", "expect")
#: django-celery-beat's interval periods (``intervalschedule.period``) → timedelta keyword.
DJANGO_PERIODS = frozenset({"days", "hours", "minutes", "seconds", "microseconds"})


class InvalidEntry(ValueError):
    """A stored entry this module cannot read (the message names the entry and why)."""


@dataclass(frozen=True)
class Entry:
    """One periodic entry.

    Attributes:
        name: the entry's name in its source (``beat_schedule`` key, RedBeat name, django
            ``periodictask.name``; for ``--expect`` the task name).
        task: the Celery task name beat sends (the history's ``name``).
        schedule: a Celery schedule (interval, crontab, solar) bound to an app whose timezone
            it follows.
        source: one of :data:`SOURCES`.
        args: the positional arguments beat sends (``None``: the source does not say).
        kwargs: the keyword arguments beat sends (``None``: the source does not say).

    """

    name: str
    task: str
    schedule: BaseSchedule = field(compare=False)
    source: str
    args: tuple[Any, ...] | None = None
    kwargs: Mapping[str, Any] | None = field(default=None, compare=False)

    @property
    def schedule_text(self) -> str:
        """A short human text of the schedule: ``every 2s``, ``crontab 0 2 * * *``, ``solar
        sunrise 48.85,2.35``.
        """
        return describe(self.schedule)

    def argument_reprs(self) -> tuple[str, str] | None:
        """The ``args`` and ``kwargs`` reprs Celery puts in the task's events (and the history
        keeps) for this entry's sends: beat sends the args as a list and the kwargs as a dict
        (``celery.beat``), reprs by :func:`celery.utils.saferepr.saferepr`, e.g.
        ``("[2, 3]", "{}")``. ``None`` when the source does not say.
        """
        if self.args is None:
            return None
        return saferepr(list(self.args)), saferepr(dict(self.kwargs or {}))


def describe(value: BaseSchedule) -> str:
    """A short text of a Celery schedule (see :attr:`Entry.schedule_text`)."""
    if isinstance(value, crontab):
        return "crontab " + " ".join(str(part) for part in (
            value._orig_minute, value._orig_hour, value._orig_day_of_month,
            value._orig_month_of_year, value._orig_day_of_week))
    if isinstance(value, solar):
        return f"solar {value.event} {value.lat},{value.lon}"
    if isinstance(value, schedule):
        return f"every {value.run_every.total_seconds():g}s"
    return type(value).__name__


def next_run(value: BaseSchedule, after: float) -> float | None:
    """The first time ``value`` is due after a run at ``after``, seconds since the epoch, as
    Celery's beat computes it (``remaining_estimate(last_run_at)``, evaluated with the
    schedule's clock frozen at ``after`` so that the answer does not depend on now). Not
    thread-safe for one schedule object (its ``nowfun`` is swapped during the call).

    Returns:
        The due time (> ``after`` for a schedule that moves on), or ``None`` when the schedule
        gives no next run.

    """
    frozen = datetime.fromtimestamp(after, timezone.utc)
    # Celery's schedules read "now" from nowfun; a copy would lose a crontab's own time zone.
    saved = value.nowfun
    value.nowfun = lambda: frozen
    try:
        remaining = value.remaining_estimate(frozen)
    finally:
        value.nowfun = saved
    if remaining is None:
        return None
    return max((frozen + remaining).timestamp(), after)


def entries_from_beat_schedule(beat_schedule: Mapping[str, Any], app: Celery,
                               source: str = "app") -> list[Entry]:
    """Entries of an app's ``beat_schedule`` (``{name: {"task", "schedule", "args",
    "kwargs", "relative", ...}}``), schedules built the way ``celery.beat.ScheduleEntry``
    builds them (:func:`celery.schedules.maybe_schedule`: a number or timedelta is an
    interval) and bound to ``app`` (its timezone).

    Raises:
        InvalidEntry: an entry without ``task`` or ``schedule``, or with a schedule Celery
            cannot read.

    """
    entries = []
    for name, spec in beat_schedule.items():
        if not isinstance(spec, Mapping) or not spec.get("task") or "schedule" not in spec:
            raise InvalidEntry(f"beat_schedule entry {name!r}: a dict with task and schedule "
                               "expected")
        try:
            value = maybe_schedule(spec["schedule"], spec.get("relative", False), app=app)
        except Exception as exc:
            raise InvalidEntry(f"beat_schedule entry {name!r}: {exc}") from None
        if not isinstance(value, BaseSchedule):
            raise InvalidEntry(f"beat_schedule entry {name!r}: schedule {value!r} is not a "
                               "Celery schedule")
        entries.append(Entry(str(name), str(spec["task"]), value, source,
                             tuple(spec.get("args") or ()), dict(spec.get("kwargs") or {})))
    return entries


def entry_from_redbeat(definition: str | bytes, app: Celery) -> Entry | None:
    """The entry of a RedBeat key's ``definition`` field (JSON written by RedBeat's encoder:
    ``{"name", "task", "schedule": {"__type__": "interval"|"crontab"|"rrule", ...}, "args",
    "kwargs", "enabled"}``), decoded by ``redbeat.decoder.RedBeatJSONDecoder``; the schedule is
    bound to ``app``.

    Returns:
        The entry, or ``None`` when it is disabled (``"enabled": false``).

    Raises:
        InvalidEntry: not JSON, no task or name, or a schedule RedBeat cannot decode.
        ImportError: celery-redbeat is not installed.

    """
    from redbeat.decoder import RedBeatJSONDecoder

    try:
        data = json.loads(definition, cls=RedBeatJSONDecoder)
    except (ValueError, TypeError, KeyError) as exc:
        raise InvalidEntry(f"RedBeat definition: {exc}") from None
    if not isinstance(data, dict) or not data.get("name") or not data.get("task"):
        raise InvalidEntry("RedBeat definition: name and task expected")
    value = data.get("schedule")
    if not isinstance(value, BaseSchedule):
        raise InvalidEntry(f"RedBeat entry {data['name']!r}: no schedule Celery can read")
    if data.get("enabled", True) is False:
        return None
    value.app = app
    return Entry(str(data["name"]), str(data["task"]), value, "redbeat",
                 tuple(data.get("args") or ()), dict(data.get("kwargs") or {}))


def entry_from_django_row(row: Mapping[str, Any], app: Celery) -> Entry | None:
    """The entry of a django-celery-beat ``periodictask`` row joined with its schedule row.

    ``row`` has the ``periodictask`` columns ``name``, ``task``, ``args`` and ``kwargs`` (JSON
    text), ``enabled``, ``one_off``, and the schedule's columns prefixed by its table:
    ``interval_every``/``interval_period``, ``crontab_minute``/``_hour``/``_day_of_week``/
    ``_day_of_month``/``_month_of_year``/``_timezone``, ``solar_event``/``_latitude``/
    ``_longitude`` (``None`` where the task has no such schedule).

    Returns:
        The entry, or ``None`` for a disabled or one-off task, or one on a clocked schedule
        (it runs once: nothing to expect after).

    Raises:
        InvalidEntry: arguments that are not JSON, an unknown interval period or time zone,
            or a task with no schedule.

    """
    name = str(row["name"])
    if not row["enabled"] or row.get("one_off"):
        return None
    try:
        args = json.loads(row.get("args") or "[]")
        kwargs = json.loads(row.get("kwargs") or "{}")
    except ValueError:
        raise InvalidEntry(f"django-celery-beat task {name!r}: args/kwargs are not JSON"
                           ) from None
    value: BaseSchedule
    if row.get("interval_every") is not None:
        period = row["interval_period"]
        if period not in DJANGO_PERIODS:
            raise InvalidEntry(f"django-celery-beat task {name!r}: unknown period {period!r}")
        value = schedule(timedelta(**{period: row["interval_every"]}), app=app)
    elif row.get("crontab_minute") is not None:
        value = crontab(minute=row["crontab_minute"], hour=row["crontab_hour"],
                        day_of_week=row["crontab_day_of_week"],
                        day_of_month=row["crontab_day_of_month"],
                        month_of_year=row["crontab_month_of_year"], app=app)
        value.tz = _zone(name, row.get("crontab_timezone") or "UTC")
    elif row.get("solar_event") is not None:
        value = solar(row["solar_event"], float(row["solar_latitude"]),
                      float(row["solar_longitude"]), app=app)
    else:
        return None  # clocked (one run at a set time) or no schedule: nothing periodic
    return Entry(name, str(row["task"]), value, "django", tuple(args), dict(kwargs))


def _zone(name: str, zone: str) -> tzinfo:
    """The time zone ``zone`` of django-celery-beat task ``name``'s crontab."""
    try:
        return ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidEntry(f"django-celery-beat task {name!r}: unknown time zone {zone!r}"
                           ) from None


def expected_entry(task: str, seconds: float, app: Celery) -> Entry:
    """The entry of ``--expect TASK=INTERVAL`` (parsed by
    :func:`exporter.config.parse_expectation`): ``task`` must be sent at least every
    ``seconds``; the entry is named after the task.
    """
    return Entry(task, task, schedule(timedelta(seconds=seconds), app=app), "expect")


def unique_by_name(groups: Iterable[Iterable[Entry]]) -> list[Entry]:
    """The entries of ``groups`` in order, an entry whose name came before left out (the same
    schedule read from two sources: RedBeat keeps the app's ``beat_schedule`` too).
    """
    seen: set[str] = set()
    unique = []
    for group in groups:
        for entry in group:
            if entry.name not in seen:
                seen.add(entry.name)
                unique.append(entry)
    return unique
