"""The periodic tracker: every ``interval`` seconds, read the schedule sources and each entry's
runs from the history, count the runs that were due and not sent, and publish an immutable
:class:`PeriodicSnapshot` for ``/metrics`` (no I/O at scrape time).

Missed runs (:class:`MissedRuns`): after a run sent at ``s`` the next is due at
``next_run(schedule, s)`` — beat's own rule (an interval counts from the last send; a crontab
is due at its next matching minute). A due time ``d`` is *missed* when no run was sent by
``d + grace``; the count then goes on from ``d`` (beat stopped: one more miss each period).
A send after ``d + grace`` starts the count again from that send. Counting starts when the
tracker first sees the entry (the exporter's start): misses while the exporter was down are not
known (its events were not seen either), and an entry whose last run is older than the start
counts from the start. ``grace`` must cover the history writer's delay (rows are written in
batches, half a second after the event by default) and beat's own lateness.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from celery.schedules import BaseSchedule
from sqlalchemy import Engine

from exporter.logs import describe as describe_error
from exporter.periodic.runs import Runs, runs
from exporter.periodic.schedules import Entry, next_run, unique_by_name
from exporter.periodic.sources import Source

log = logging.getLogger(__name__)
#: Each check after the first reads the runs finished this many seconds before the previous
#: check and later (and those not finished): rows the history writes later than that after
#: their end (an outage of the history database) are not seen.
REREAD_SECONDS = 600.0
#: Due times judged per entry and check at most (a 1 s schedule after a long stall): the rest
#: are judged at the next checks.
MAX_DUES_PER_CHECK = 10_000


class MissedRuns:
    """The missed-run count of one entry (pure; see the module docs).

    Args:
        schedule: the entry's Celery schedule.
        start: seconds since the epoch from which due times are judged (the first sighting).
        grace: seconds after a due time by which its run must have been sent.

    """

    def __init__(self, schedule: BaseSchedule, start: float, grace: float) -> None:
        self._schedule = schedule
        self._grace = grace
        #: Due times after this are not judged yet (the last send, or the last missed due).
        self.cursor = start
        #: The newest send seen (``None``: none since ``start``).
        self.last_sent: float | None = None
        self.missed = 0

    def observe(self, sends: Sequence[float], now: float) -> None:
        """Judge the due times up to ``now`` given the sends after the previous call (oldest
        first; older ones are ignored): each due time that passed its grace with no send is
        counted once.
        """
        budget = MAX_DUES_PER_CHECK
        for sent in sends:
            if sent <= self.cursor:
                continue
            budget = self._judge(until=sent, budget=budget, inclusive=False)
            self.cursor = self.last_sent = sent
        self._judge(until=now, budget=budget, inclusive=True)

    def _judge(self, until: float, budget: int, inclusive: bool) -> int:
        """Count the due times after :attr:`cursor` whose grace ended before ``until`` (or at
        it, when ``inclusive``); return the budget left.
        """
        while budget > 0:
            due = next_run(self._schedule, self.cursor)
            if due is None or due <= self.cursor:
                break
            deadline = due + self._grace
            if deadline > until or (deadline == until and not inclusive):
                break
            self.missed += 1
            self.cursor = due
            budget -= 1
        return budget


@dataclass(frozen=True)
class EntryStatus:
    """One entry at a check (times: seconds since the epoch; ``None``: not known).

    Attributes:
        entry: the entry's name. task: its task name. source: where it was read.
        schedule: its schedule as text (``every 2s``, ``crontab 0 2 * * *``).
        next_run: when the next run is due: after the newest send the history knows, else
            after the first sighting (in the past: late).
        last_sent, last_started, last_succeeded, last_outcome: from the history
            (:class:`~exporter.periodic.runs.Runs`).
        missed: runs missed since the entry was first seen (:class:`MissedRuns`).

    """

    entry: str
    task: str
    source: str
    schedule: str
    next_run: float | None
    last_sent: float | None
    last_started: float | None
    last_succeeded: float | None
    last_outcome: str | None
    missed: int


@dataclass(frozen=True)
class PeriodicSnapshot:
    """The tracker's latest check: ``taken_at`` (exporter clock when it read the history),
    ``entries`` (by source order, then the source's order) and ``sources`` (``{name: True
    when it was read at this check}``).
    """

    taken_at: float
    entries: tuple[EntryStatus, ...]
    sources: Mapping[str, bool]


@dataclass
class _Tracked:
    entry: Entry
    counter: MissedRuns
    first_seen: float
    #: The runs read so far and the exporter time of that read (``None``: not read yet).
    runs: Runs | None = None
    read_at: float = 0.0


class PeriodicTracker:
    """Checks the periodic entries every ``interval`` seconds in its own thread.

    Args:
        sources: the schedule sources, in priority order (an entry name read from an earlier
            source hides the same name in a later one).
        engine: the history database (the runs are read from it).
        interval: seconds between two checks.
        grace: seconds after a due time by which its run must be sent (:class:`MissedRuns`).
        clock: seconds since the epoch (injected for tests).

    """

    def __init__(self, sources: Sequence[Source], engine: Engine, interval: float,
                 grace: float, clock: Callable[[], float] = time.time) -> None:
        self._sources = tuple(sources)
        self._engine = engine
        self.interval = interval
        self._grace = grace
        self._clock = clock
        self._read: dict[str, list[Entry]] = {source.name: [] for source in self._sources}
        self._failing: set[str] = set()
        self._tracked: dict[tuple[object, ...], _Tracked] = {}
        self._latest: PeriodicSnapshot | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def latest(self) -> PeriodicSnapshot | None:
        """The latest check's snapshot (``None`` before the first one); no I/O."""
        return self._latest

    def check(self) -> PeriodicSnapshot:
        """Read the sources and the history now, update the counts, publish the snapshot.

        Raises:
            sqlalchemy.exc.SQLAlchemyError: the history cannot be read (the previous snapshot
                stays).

        """
        up = {source.name: self._read_source(source) for source in self._sources}
        entries = unique_by_name(self._read[source.name] for source in self._sources)
        shared = _shared_tasks(entries)
        now = self._clock()
        statuses = []
        tracked: dict[tuple[object, ...], _Tracked] = {}
        for entry in entries:
            arguments = entry.argument_reprs() if entry.task in shared else None
            key = (entry.name, entry.task, entry.schedule_text, arguments)
            state = self._tracked.get(key) or _Tracked(
                entry, MissedRuns(entry.schedule, now, self._grace), now)
            tracked[key] = state
            since_check = None if state.runs is None else state.read_at - REREAD_SECONDS
            found = runs(self._engine, entry.task, state.counter.cursor, arguments, since_check)
            found = found if state.runs is None else state.runs.merged(found)
            state.runs, state.read_at = found, now
            state.counter.observe(found.sent, now)
            after = found.last_sent if found.last_sent is not None else state.first_seen
            statuses.append(EntryStatus(
                entry.name, entry.task, entry.source, entry.schedule_text,
                next_run(entry.schedule, after), found.last_sent, found.last_started,
                found.last_succeeded, found.last_outcome, state.counter.missed))
        self._tracked = tracked
        snapshot = PeriodicSnapshot(now, tuple(statuses), up)
        self._latest = snapshot
        return snapshot

    def _read_source(self, source: Source) -> bool:
        """Read ``source`` into ``self._read``; on failure keep its last entries, log once
        when it starts failing and once when it recovers.
        """
        try:
            self._read[source.name] = source.read()
        except Exception as exc:
            if source.name not in self._failing:
                self._failing.add(source.name)
                log.warning("periodic schedule source unreadable source=%s error=%s; keeping "
                            "its last %d entries", source.name, describe_error(exc),
                            len(self._read[source.name]))
            return False
        if source.name in self._failing:
            self._failing.discard(source.name)
            log.info("periodic schedule source readable again source=%s", source.name)
        return True

    def start(self) -> None:
        """Check now and then every :attr:`interval` seconds in a daemon thread."""
        self._thread = threading.Thread(target=self._run, name="periodic-tracker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread (waits up to ``timeout`` seconds for a check in progress)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                self.check()
            except Exception as exc:
                if not failing:
                    log.warning("periodic check failed error=%s; retrying every %.3gs",
                                describe_error(exc), self.interval)
                failing = True
            else:
                if failing:
                    log.info("periodic check recovered")
                failing = False
            self._stop.wait(self.interval)


def _shared_tasks(entries: Sequence[Entry]) -> set[str]:
    """Task names sent by more than one entry: their runs are told apart by arguments."""
    seen: set[str] = set()
    shared: set[str] = set()
    for entry in entries:
        (shared if entry.task in seen else seen).add(entry.task)
    return shared
