"""The poller thread: the only place that broadcasts to workers or reads broker queues.

One round every ``--inspect-interval`` seconds (start to start):

1. ``enable_events`` broadcast (when ``--enable-events``), so workers started without ``-E``
   send task events;
2. ``inspect active_queues`` to every worker, waiting the full ``--inspect-timeout`` (the
   poller cannot know how many workers exist); this also feeds
   :meth:`Model.set_worker_queues`, which lets ``task-received`` name a task's queue;
3. ``inspect active`` (``safe=True``), ``reserved``, ``scheduled``, ``stats`` — separate
   broadcasts addressed to the workers that answered step 2, each returning as soon as all of
   them answered (``limit``), so a round takes about one timeout plus a few round trips; and
   ``inspect registered`` when a worker answers for the first time and every
   :data:`REGISTERED_EVERY` rounds: the task names the workers know take label slots before
   names none of them registered (:meth:`Model.set_registered_names`);
4. queue lengths (Redis ``LLEN`` pipeline / RabbitMQ passive declare) of the ``--queue`` names,
   every queue a worker reports consuming, the queues found on the broker (Redis binding
   keys, the RabbitMQ management API; looked up at most every
   :data:`QUEUE_DISCOVERY_INTERVAL`) and in ``task-sent`` events, and the queues shown last
   round; :class:`~exporter.poll.queue_tracker.QueueTracker` says which are shown (a queue
   holding messages always is).

The round ends by publishing a new immutable :class:`PollSnapshot` with one attribute
assignment; scrapes read it through :meth:`Poller.latest` and never cause a broker call.

A worker that answered a call before but not this round keeps its previous values for this one
round (then they are dropped) and the round counts in ``celery_inspect_timeouts_total``; a
worker is remembered for that counter until ``worker_forget_after`` seconds after its last
answer. A failed call (exception) is logged and counted in ``celery_jobmon_poll_errors_total
{call}``; its previous values are also kept for one round; a failed queue read keeps the
previous round's lengths once, then drops them. The next round tries again.

Why one module of this size: the steps of a round feed each other (the workers that answered
step 2 are the addressees of step 3; the queues they consume are read in step 4) and share the
values carried for a worker that missed a round; the reply parsers
(:mod:`~exporter.poll.inspect_replies`), queue readers and the queue tracker live apart.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, runtime_checkable

from celery import Celery

from exporter.config import DEFAULT_QUEUE_FORGET_AFTER
from exporter.logs import Throttled, describe, tls_problem
from exporter.poll.amqp_queues import AmqpQueueReader
from exporter.poll.inspect_replies import (
    MAXRSS_SCALE_LINUX,
    parse_active_queues,
    parse_registered,
    parse_scheduled,
    parse_stats,
    parse_tasks,
)
from exporter.poll.queue_tracker import QueueTracker
from exporter.poll.rabbitmq_management import ManagementApi
from exporter.poll.redis_queues import RedisQueueReader
from exporter.poll.snapshot import (
    Carried,
    PollSnapshot,
    QueueState,
    SentTime,
    carry_over,
    consumer_counts,
    remembered_pools,
    task_gauges,
    worker_states,
)
from exporter.state.health import Health
from exporter.state.model import Model

log = logging.getLogger(__name__)

DEFAULT_WORKER_FORGET_AFTER = 600.0
#: Seconds between two look-ups of the broker's queues (a Redis ``SCAN`` of the binding keys,
#: a management API request); the first round looks at once, a failed look-up is retried at
#: the next round.
QUEUE_DISCOVERY_INTERVAL = 60.0
#: Rounds between two ``inspect registered`` calls (and at a worker's first answer).
REGISTERED_EVERY = 10
#: Inspect calls addressed to the workers that answered ``active_queues``, in order.
TARGETED_CALLS = ("active", "reserved", "scheduled", "stats")
INSPECT_CALLS = ("active_queues", *TARGETED_CALLS)


class Broadcaster(Protocol):
    """The worker remote-control calls the poller makes (``app.control``)."""

    def enable_events(self) -> None:
        """Broadcast ``enable_events`` (no reply awaited)."""

    def inspect(self, call: str, destination: Sequence[str] | None) -> Mapping[str, Any] | None:
        """Run ``inspect().<call>()``; ``{hostname: payload}`` or ``None`` (no answer)."""


class QueueReader(Protocol):
    """Reads broker queues (:class:`RedisQueueReader`, :class:`AmqpQueueReader`)."""

    def read(self, queues: Sequence[str], sent_time: SentTime | None = None
             ) -> dict[str, QueueState]:
        """States of the queues that exist."""

    def close(self) -> None:
        """Drop the connection; the next read reconnects."""


@runtime_checkable
class QueueFinder(Protocol):
    """A queue reader that can also list the broker's task queues (both readers can)."""

    def find_queues(self) -> set[str]:
        """Names of the broker's queues worth reading (see each reader)."""


class CeleryBroadcaster:
    """:class:`Broadcaster` over ``app.control``; ``timeout``: seconds to wait for replies.

    With a ``destination`` the call goes to those workers only and returns as soon as all of
    them answered (``limit=len(destination)``); without, it waits the whole timeout.

    Each call first connects once without retrying (kombu's ``ensure_connection(max_retries=
    0)``) and broadcasts over that connection: a pidbox publish retries its connection without
    end (``retry=True`` with no limit), so with the broker down the poller's round stalled in
    the first broadcast until the broker came back, and no round ended during an outage. Now
    an unreachable broker raises at once (a poll error of that call) and the round goes on.
    """

    def __init__(self, app: Celery, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    @contextmanager
    def _connected(self) -> Iterator[Any]:
        with self.app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=0)
            yield connection

    def enable_events(self) -> None:
        """Broadcast ``enable_events``.

        Raises:
            kombu.exceptions.OperationalError: the broker is unreachable.

        """
        with self._connected() as connection:
            self.app.control.enable_events(connection=connection)

    def inspect(self, call: str, destination: Sequence[str] | None) -> Mapping[str, Any] | None:
        """Run one inspect broadcast; raises what kombu raises when the broker is unreachable
        (``OperationalError`` at once when it cannot connect).
        """
        with self._connected() as connection:
            inspector = self.app.control.inspect(
                timeout=self.timeout,
                destination=list(destination) if destination else None,
                limit=len(destination) if destination else None,
                connection=connection,
            )
            if call == "active":
                return inspector.active(safe=True)  # argument reprs: nothing to deserialize
            result: Mapping[str, Any] | None = getattr(inspector, call)()
            return result


def queue_reader_for(app: Celery, management_url: str | None = None) -> QueueReader | None:
    """A queue reader for the app's broker: Redis (``redis``, ``rediss``, ``sentinel``) or AMQP
    (``amqp``, ``pyamqp``, ``amqps``); ``None`` for other transports (no queue lengths).

    ``management_url``: RabbitMQ management API (``--rabbitmq-management-url``) the AMQP
    reader lists queues with; ignored on other brokers.
    """
    connection = app.connection_for_read()
    driver = connection.transport.driver_type
    if driver == "redis":
        return RedisQueueReader(connection)
    if driver == "amqp":
        management = (ManagementApi.for_connection(management_url, connection)
                      if management_url else None)
        return AmqpQueueReader(connection, management)
    connection.release()
    log.warning("queue lengths not supported transport=%s", driver)
    return None


_PARSERS: dict[str, Callable[[Mapping[str, Any] | None], Mapping[str, Any]]] = {
    "active_queues": parse_active_queues,
    "active": parse_tasks,
    "reserved": parse_tasks,
    "scheduled": parse_scheduled,
}


class Poller(threading.Thread):
    """Daemon thread running one round every ``interval`` seconds until stopped.

    Args:
        app: Celery app connected to the broker (``app.control``; the broker connection for
            queue reads). May be ``None`` when ``broadcaster`` and ``queue_reader`` are given.
        model: receives the worker → queues map (:meth:`Model.set_worker_queues`); names
            tasks (:meth:`Model.label_name`); names queues seen in ``task-sent`` events
            (:meth:`Model.sent_queues`).
        health: counts the failed calls (:meth:`Health.count_poll_error`).
        interval: seconds between round starts; timeout: seconds to wait for inspect replies.
        enable_events: also broadcast ``enable_events`` each round.
        queues: queue names always read (``--queue``), consumed or not.
        queue_forget_after: seconds an empty queue no worker consumes any more (and not in
            ``queues``) is still shown (:class:`~exporter.poll.queue_tracker.QueueTracker`).
        management_url: RabbitMQ management API URL to list queues with (``None``: AMQP
            only: queues are found from ``task-sent`` events, :meth:`Model.sent_queues`).
        worker_forget_after: seconds after its last answer a worker still counts for
            ``celery_inspect_timeouts_total``.
        maxrss_scale: ``rusage.maxrss`` → bytes (1024: Linux workers).
        sent_time: task id → task-sent time (the model's task index), for the oldest message
            age; ``None``: no age.
        broadcaster / queue_reader: injected clients (default: built from ``app``; the queue
            reader is created in the poller thread on first use).
        clock: seconds since the epoch; monotonic: for durations.

    """

    def __init__(
        self,
        app: Celery | None,
        model: Model,
        health: Health,
        *,
        interval: float,
        timeout: float,
        enable_events: bool,
        queues: Iterable[str] = (),
        queue_forget_after: float = DEFAULT_QUEUE_FORGET_AFTER,
        management_url: str | None = None,
        worker_forget_after: float = DEFAULT_WORKER_FORGET_AFTER,
        maxrss_scale: int = MAXRSS_SCALE_LINUX,
        sent_time: SentTime | None = None,
        broadcaster: Broadcaster | None = None,
        queue_reader: QueueReader | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(name="poller", daemon=True)
        if broadcaster is None:
            if app is None:
                raise ValueError("app is required unless broadcaster is given")
            broadcaster = CeleryBroadcaster(app, timeout)
        self.app = app
        self.model = model
        self.health = health
        self.interval = interval
        self.timeout = timeout
        self.enable_events = enable_events
        self.tracker = QueueTracker(queues, queue_forget_after)
        self.management_url = management_url
        self.worker_forget_after = worker_forget_after
        self.maxrss_scale = maxrss_scale
        self.sent_time = sent_time
        self.broadcaster = broadcaster
        self._reader = queue_reader
        self._reader_unavailable = queue_reader is None and app is None
        self._clock = clock
        self._monotonic = monotonic
        self._names = model.label_name
        self._stopping = threading.Event()
        # A worker gone or a broker call failing repeats its line every round: once per 5 min.
        self._throttled = Throttled(log)
        self._latest: PollSnapshot | None = None
        self._carried: dict[str, dict[str, Carried[Any]]] = {c: {} for c in INSPECT_CALLS}
        self._last_answer: dict[str, float] = {}
        self._timeouts: dict[str, int] = {}
        self._found: set[str] = set()
        self._next_discovery = float("-inf")
        self._last_queues: tuple[QueueState, ...] = ()
        self._queues_read_at: float | None = None
        self._other_keyprefixes: frozenset[str] | None = None
        self._registered_from: set[str] = set()
        self._rounds = 0

    # -- reading side (any thread) ---------------------------------------------------------

    def latest(self) -> PollSnapshot | None:
        """The snapshot of the last completed round (``None`` before the first); no I/O."""
        return self._latest

    # -- the round (poller thread) ---------------------------------------------------------

    def poll_once(self) -> PollSnapshot:
        """Run one round, publish and return its snapshot; errors are counted, never raised."""
        started = self._monotonic()
        now = self._clock()
        if self.enable_events:
            self._guarded("enable_events", self.broadcaster.enable_events)
        replies = self._inspect_round(now)
        values = {call: {h: c.value for h, c in self._carried[call].items()}
                  for call in INSPECT_CALLS}
        queue_states = self._read_queues(now, values["active_queues"])
        queues_read_at = self._queues_read_at
        reserved, scheduled, earliest, oldest = task_gauges(
            values["active"], values["reserved"], values["scheduled"], values["active_queues"],
            self._names,
        )
        self._ask_registered(sorted(replies["active_queues"] or ()))
        fresh_queues = replies["active_queues"]
        if fresh_queues:
            self.model.set_worker_queues({
                hostname: [q.name for q in queues] for hostname, queues in fresh_queues.items()})
        snapshot = PollSnapshot(
            taken_at=self._clock(),
            duration=self._monotonic() - started,
            queues=queue_states,
            reserved=reserved,
            scheduled=scheduled,
            earliest_eta=earliest,
            oldest_running_start=oldest,
            workers=worker_states(values["stats"]),
            pools=remembered_pools(self._latest, values["stats"]),
            inspect_timeouts=dict(self._timeouts),
            queues_read_at=queues_read_at,
            other_keyprefixes=self._other_keyprefixes,
        )
        if snapshot.pools:
            self.model.set_worker_pools(snapshot.pools)
        self._latest = snapshot  # one assignment: readers see the old or the new round
        return snapshot

    def _inspect_round(self, now: float) -> dict[str, Mapping[str, Any] | None]:
        """The inspect calls of one round; updates carried values, timeouts and worker memory.

        Returns the parsed replies of this round by call (``None``: the call failed).
        """
        replies: dict[str, Mapping[str, Any] | None] = {}
        replies["active_queues"] = self._inspect("active_queues", None)
        answered = sorted(replies["active_queues"] or ())
        for call in TARGETED_CALLS:
            if replies["active_queues"] is None:
                replies[call] = None  # workers unknown this round: carry, count nothing
            else:
                replies[call] = self._inspect(call, answered) if answered else {}
        known = {h for h, t in self._last_answer.items() if now - t <= self.worker_forget_after}
        missing: set[str] = set()
        for call in INSPECT_CALLS:
            reply = replies[call]
            self._carried[call] = carry_over(self._carried[call], reply)
            if reply is not None:
                missing |= known - set(reply)
                for hostname in reply:
                    self._last_answer[hostname] = now
        for hostname in sorted(missing):
            self._timeouts[hostname] = self._timeouts.get(hostname, 0) + 1
            self._throttled.log(logging.INFO, f"timeout:{hostname}",
                                "inspect timeout hostname=%s", hostname)
        for hostname in [h for h, t in self._last_answer.items()
                         if now - t > self.worker_forget_after]:
            del self._last_answer[hostname]
            self._timeouts.pop(hostname, None)
        return replies

    def _ask_registered(self, answered: Sequence[str]) -> None:
        """``inspect registered`` to the workers that answered, when one of them is new or
        every :data:`REGISTERED_EVERY` rounds; the names go to the model.
        """
        self._rounds += 1
        new = set(answered) - self._registered_from
        if not answered or (not new and self._rounds % REGISTERED_EVERY):
            return
        ok, reply = self._guarded("registered",
                                  lambda: self.broadcaster.inspect("registered", answered))
        if ok:
            self._registered_from |= set(reply or ())
            self.model.set_registered_names(parse_registered(reply))

    def _inspect(self, call: str, destination: Sequence[str] | None
                 ) -> Mapping[str, Any] | None:
        def fetch() -> Mapping[str, Any]:
            reply = self.broadcaster.inspect(call, destination)
            if call == "stats":
                return parse_stats(reply, self.maxrss_scale)
            return _PARSERS[call](reply)

        ok, parsed = self._guarded(call, fetch)
        return parsed if ok else None

    def _guarded(self, call: str, fn: Callable[[], Any]) -> tuple[bool, Any]:
        try:
            return True, fn()
        except Exception as exc:
            self._count_error(call, exc)
            return False, None

    def _count_error(self, call: str, exc: Exception) -> None:
        self.health.count_poll_error(call)
        if tls_problem(exc) is not None:
            # The event consumer logs the broker's TLS failure (once, with the fix).
            log.debug("poll call failed call=%s error=%s", call, describe(exc))
            return
        self._throttled.log(logging.WARNING, f"failed:{call}",
                            "poll call failed call=%s error=%s", call, describe(exc))

    def _found_queues(self, now: float, reader: QueueReader) -> set[str]:
        """Queues found on the broker (at most every :data:`QUEUE_DISCOVERY_INTERVAL`; the
        last answer in between, or after a failed look-up) and in ``task-sent`` events.
        """
        if isinstance(reader, QueueFinder) and now >= self._next_discovery:
            ok, found = self._guarded("queue_discovery", reader.find_queues)
            if ok:
                self._found = found
                self._next_discovery = now + QUEUE_DISCOVERY_INTERVAL
                if isinstance(reader, RedisQueueReader):
                    self._other_keyprefixes = reader.other_keyprefixes
                    self._report_keyprefixes(reader.layout.global_keyprefix)
        return self._found | set(self.model.sent_queues())

    def _report_keyprefixes(self, own: str) -> None:
        """Say so (log every 5 minutes, ``/readyz``) when Redis holds kombu bindings under
        another ``global_keyprefix``: workers configured with it publish events and queues
        this exporter does not see (queues read 0, no event arrives).
        """
        others = sorted(self._other_keyprefixes or ())
        if not others:
            return
        detail = (f"Redis holds kombu queue bindings under global_keyprefix "
                  f"{', '.join(repr(p) for p in others)}, this exporter reads {own!r}: workers "
                  "using it are invisible here (queues read 0, no events); give the exporter "
                  "the workers' prefix: --broker-transport-option global_keyprefix=<prefix>")
        self.health.report_problem("global_keyprefix", detail)
        self._throttled.log(logging.WARNING, "global_keyprefix", "%s", detail)

    def _read_queues(self, now: float, consumed: Mapping[str, Any]) -> tuple[QueueState, ...]:
        """The queues of this round. When the broker does not answer, the last ones read, as long
        as it does not (``_queues_read_at`` keeps when they were read): a queue's series stays,
        stale, with ``celery_jobmon_queue_lengths_age_seconds`` growing, instead of going away
        and leaving the queue alerts without data.
        """
        reader = self._queue_reader()
        if reader is None:
            return ()
        names = self.tracker.to_read(now, (q.name for qs in consumed.values() for q in qs),
                                     self._found_queues(now, reader))
        if not names:
            self._last_queues, self._queues_read_at = (), self._clock()
            return ()
        ok, states = self._guarded("queue_lengths", lambda: reader.read(names, self.sent_time))
        if not ok:
            reader.close()
            return self._last_queues
        workers = consumer_counts(consumed)
        result = tuple(
            state if state.consumers is not None
            else dataclasses.replace(state, consumers=workers.get(state.name, 0))
            for name in self.tracker.to_show(now, states)
            if (state := states.get(name)) is not None
        )
        self._last_queues, self._queues_read_at = result, self._clock()
        return result

    def _queue_reader(self) -> QueueReader | None:
        if self._reader is None and not self._reader_unavailable and self.app is not None:
            try:
                self._reader = queue_reader_for(self.app, self.management_url)
            except Exception as exc:
                self._count_error("queue_lengths", exc)
                return None
            self._reader_unavailable = self._reader is None
        return self._reader

    # -- thread ----------------------------------------------------------------------------

    def run(self) -> None:
        """Poll until :meth:`stop`; a bug in a round is logged and the next round runs."""
        while not self._stopping.is_set():
            started = self._monotonic()
            try:
                self.poll_once()
            except Exception:
                log.exception("poll round failed")
            elapsed = self._monotonic() - started
            self._stopping.wait(max(self.interval - elapsed, self.interval / 10))
        self.close()

    def close(self) -> None:
        """Release the queue reader's broker connection (the thread does it when it ends)."""
        if self._reader is not None:
            self._reader.close()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to stop and wait up to ``timeout`` seconds for it."""
        self._stopping.set()
        if self.is_alive():
            self.join(timeout)

