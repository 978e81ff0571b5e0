r"""Queue lengths and waiting messages on Redis, counted as kombu's Redis transport stores them.

kombu (``kombu/transport/redis.py``) keeps a queue as one Redis list per priority step:
``Channel._q_for_pri(queue, pri)`` is the bare queue name for step 0 and
``<queue><sep><step>`` for the others (``sep`` ``"\x06\x16"``, ``priority_steps``
``[0, 3, 6, 9]`` by default; both transport options). A message's priority (its ``priority``
property, clamped to 0…9, default 0) goes to the largest step not above it
(``Channel.priority``: ``steps[bisect(steps, n) - 1]``), so priority 5 waits in the step-3 list.
Producers ``LPUSH``; consumers ``BRPOP`` the lists in step order, so the oldest message of a list
is its tail (index -1) and step 0 is served first. ``global_keyprefix`` is prepended to every
key by kombu's prefixing client. kombu counts a queue (``Channel._size``) as the sum of ``LLEN``
over the step lists; so do we, in one pipeline.

Messages a worker has fetched (prefetched, ETA, running) are no longer in these lists (they sit
in kombu's ``unacked`` hash) and are reported by inspect instead (reserved/scheduled/active).

Which queues exist: kombu records every binding of a declared queue (producers declare the
queue they send to, workers the queues they consume) in a Redis set per exchange,
``<global_keyprefix>_kombu.binding.<exchange>`` (``Channel.keyprefix_queue``), whose members
are ``<routing_key><sep><pattern><sep><queue>`` (``Channel._queue_bind``). A queue's lists
disappear when it is empty, its binding stays: :meth:`RedisQueueReader.find_queues` lists the
queues from these sets (``SCAN`` + ``SMEMBERS``).

I/O is thin: :class:`RedisQueueReader` runs the pipelines; key layout and message parsing are
pure (:class:`RedisQueueLayout`, :func:`parse_message`, :func:`waiting_since`).
"""

from __future__ import annotations

import json
import logging
from bisect import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from kombu import Connection

from exporter.events.parse import parse_eta
from exporter.poll.snapshot import QueueState, SentTime

log = logging.getLogger(__name__)

DEFAULT_SEP = "\x06\x16"
#: kombu's binding set of an exchange is this prefix + the exchange name.
DEFAULT_BINDING_PREFIX = "_kombu.binding."
#: Keys asked per ``SCAN`` call when listing the binding sets.
SCAN_COUNT = 1000
DEFAULT_PRIORITY_STEPS: tuple[int, ...] = (0, 3, 6, 9)


@dataclass(frozen=True)
class RedisQueueLayout:
    """Where kombu keeps a queue's messages: ``sep``, ``priority_steps``, ``global_keyprefix``
    (the transport options of the same names); and its bindings: ``binding_prefix``
    (``Channel.keyprefix_queue`` without the exchange).
    """

    sep: str = DEFAULT_SEP
    priority_steps: tuple[int, ...] = DEFAULT_PRIORITY_STEPS
    global_keyprefix: str = ""
    binding_prefix: str = DEFAULT_BINDING_PREFIX

    @classmethod
    def from_channel(cls, channel: Any) -> RedisQueueLayout:
        """The layout of a kombu Redis channel (its transport options already applied)."""
        return cls(
            sep=channel.sep,
            priority_steps=tuple(channel.priority_steps),
            global_keyprefix=channel.global_keyprefix or "",
            binding_prefix=channel.keyprefix_queue % ("",),
        )

    @property
    def steps(self) -> tuple[int, ...]:
        """The priority steps, each once, in kombu's consumption order."""
        return tuple(dict.fromkeys(self.priority_steps))

    def step(self, priority: int) -> int:
        """The step list a priority maps to (kombu ``Channel.priority``)."""
        steps = self.priority_steps
        return steps[bisect(steps, priority) - 1]

    def key(self, queue: str, step: int) -> str:
        """The full Redis key of ``queue``'s list for ``step``, prefix included."""
        pri = self.step(step)
        name = f"{queue}{self.sep}{pri}" if pri else queue
        return self.global_keyprefix + name

    @property
    def binding_pattern(self) -> str:
        """The ``SCAN MATCH`` pattern of every exchange's binding set, prefix included (glob
        characters of the prefix escaped).
        """
        return _glob_escape(self.global_keyprefix + self.binding_prefix) + "*"

    @property
    def any_binding_pattern(self) -> str:
        """The ``SCAN MATCH`` pattern of binding sets under any ``global_keyprefix``."""
        return "*" + _glob_escape(self.binding_prefix) + "*"

    def other_keyprefix(self, key: bytes | str) -> str | None:
        """The ``global_keyprefix`` of a task queue's binding-set key when it is not this
        layout's (``""``: none), else ``None``: e.g. ``"app1:"`` for ``app1:_kombu.binding.a``
        when this layout has no prefix. The bindings of Celery's control and event exchanges
        (``*.pidbox``, ``celeryev``) do not count: any client (``celery inspect``, another
        exporter) declares them, only workers bind task queues.
        """
        text = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        prefix, found, exchange = text.partition(self.binding_prefix)
        if not found or prefix == self.global_keyprefix or exchange.endswith("pidbox") \
                or exchange.startswith("celeryev"):
            return None
        return prefix

    def bound_queue(self, member: bytes | str) -> str | None:
        """The queue of one binding set member (``routing_key<sep>pattern<sep>queue``), or
        ``None`` when the member has another shape or no queue.
        """
        text = member.decode("utf-8", "replace") if isinstance(member, bytes) else member
        parts = text.rsplit(self.sep, 2)  # a routing key may hold the separator, a queue not
        return (parts[2] or None) if len(parts) == 3 else None


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


@dataclass(frozen=True, slots=True)
class PendingMessage:
    """A task message waiting in a Redis queue, read from its kombu envelope without consuming.

    From the headers (Celery message protocol 2): ``task_id`` (``id``), ``name`` (``task``),
    ``eta`` (seconds since the epoch), ``args_repr``/``kwargs_repr`` (``argsrepr``/
    ``kwargsrepr``, as the producer truncated them); from the properties: ``priority``.
    ``step`` is the priority list it waits in. Fields the message lacks are ``None``.
    """

    task_id: str | None
    name: str | None
    priority: int | None
    eta: float | None
    args_repr: str | None
    kwargs_repr: str | None
    step: int


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def parse_message(raw: bytes | str, step: int) -> PendingMessage | None:
    """Parse one stored kombu message (the JSON envelope ``{"body", "headers", "properties",
    ...}``); the body itself is not decoded. ``None`` when it is not such a JSON object.
    """
    try:
        envelope = json.loads(raw)
    except (ValueError, TypeError):
        return None
    if not isinstance(envelope, dict):
        return None
    headers = envelope.get("headers")
    headers = headers if isinstance(headers, dict) else {}
    properties = envelope.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    priority = properties.get("priority")
    return PendingMessage(
        task_id=_opt_str(headers.get("id")),
        name=_opt_str(headers.get("task")),
        priority=priority if isinstance(priority, int) and not isinstance(priority, bool)
        else None,
        eta=parse_eta(headers.get("eta")),
        args_repr=_opt_str(headers.get("argsrepr")),
        kwargs_repr=_opt_str(headers.get("kwargsrepr")),
        step=step,
    )


@dataclass(frozen=True)
class RedisQueueReading:
    """One queue as read in one pipeline: ``lengths`` {step: LLEN} for every step, and
    ``oldest`` {step: the list's oldest message} for the non-empty lists whose tail parsed.
    """

    queue: str
    lengths: Mapping[int, int]
    oldest: Mapping[int, PendingMessage]

    @property
    def total(self) -> int:
        """All waiting messages, as kombu's ``Channel._size`` counts them."""
        return sum(self.lengths.values())


def waiting_since(reading: RedisQueueReading, sent_time: SentTime | None) -> float | None:
    """From when the queue's oldest waiting message counts as waiting (seconds since epoch).

    For the oldest message of each priority list whose send time ``sent_time(task_id)`` knows,
    the later of that time and its ETA; the earliest of those. ``None`` when no such time is
    known (no ``sent_time``, no task-sent event seen for those tasks): the age is then not
    reported at all, rather than reported as 0.
    """
    if sent_time is None:
        return None
    known = []
    for message in reading.oldest.values():
        if message.task_id is None:
            continue
        sent = sent_time(message.task_id)
        if sent is not None:
            known.append(max(sent, message.eta) if message.eta is not None else sent)
    return min(known) if known else None


def to_queue_state(reading: RedisQueueReading, sent_time: SentTime | None) -> QueueState:
    """The reading as a :class:`QueueState`: priority label = the step as text; consumers
    ``None`` (Redis cannot tell).
    """
    return QueueState(
        name=reading.queue,
        lengths={str(step): n for step, n in reading.lengths.items()},
        consumers=None,
        waiting_since=waiting_since(reading, sent_time),
    )


def page_ranges(lengths: Mapping[int, int], offset: int, limit: int
                ) -> list[tuple[int, int, int]]:
    """Which slice of each step list holds messages ``offset … offset+limit-1`` in consumption
    order (step order; within a list, tail first).

    Returns:
        ``[(step, start, stop)]`` with negative ``LRANGE`` indexes (``start`` ≤ ``stop``);
        the range reads head→tail, so the caller reverses it.

    """
    ranges = []
    for step, length in lengths.items():
        if limit <= 0:
            break
        if offset >= length:
            offset -= length
            continue
        take = min(limit, length - offset)
        ranges.append((step, -(offset + take), -(offset + 1)))
        offset, limit = 0, limit - take
    return ranges


class RedisQueueReader:
    """Reads queue lengths and waiting messages through a kombu Redis connection.

    The connection's channel gives the layout (``sep``, ``priority_steps``,
    ``global_keyprefix`` from the transport options) and the connection pool, so ``redis://``,
    ``rediss://`` (TLS) and ``sentinel://`` (master discovery) connect as kombu does. Commands go
    through a plain client on that pool with keys prefixed here (kombu's prefixing client does
    not prefix ``LRANGE``). Not thread-safe: one reader per thread.

    Args:
        connection: a kombu ``Connection`` to a Redis broker (not necessarily connected yet).

    """

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._client: redis.Redis | None = None
        self._layout: RedisQueueLayout | None = None
        #: ``global_keyprefix`` values of binding sets the last :meth:`find_queues` saw that
        #: are not this connection's: workers configured with another prefix.
        self.other_keyprefixes: frozenset[str] = frozenset()

    def _open(self) -> tuple[redis.Redis, RedisQueueLayout]:
        if self._client is None or self._layout is None:
            channel: Any = self.connection.default_channel
            self._layout = RedisQueueLayout.from_channel(channel)
            self._client = redis.Redis(connection_pool=channel.pool)
        return self._client, self._layout

    @property
    def layout(self) -> RedisQueueLayout:
        """The key layout (connects on first use)."""
        return self._open()[1]

    def read_raw(self, queues: Sequence[str]) -> dict[str, RedisQueueReading]:
        """``LLEN`` and ``LRANGE key -1 -1`` of every step list of every queue, one pipeline.

        Raises:
            redis.RedisError, kombu/OSError connection errors: the broker did not answer.

        """
        client, layout = self._open()
        steps = layout.steps
        pipe = client.pipeline(transaction=False)
        for queue in queues:
            for step in steps:
                key = layout.key(queue, step)
                pipe.llen(key)
                pipe.lrange(key, -1, -1)
        replies = pipe.execute()
        readings: dict[str, RedisQueueReading] = {}
        position = 0
        for queue in queues:
            lengths: dict[int, int] = {}
            oldest: dict[int, PendingMessage] = {}
            for step in steps:
                length, tail = replies[position], replies[position + 1]
                position += 2
                lengths[step] = int(length)
                if tail:
                    message = parse_message(tail[0], step)
                    if message is not None:
                        oldest[step] = message
            readings[queue] = RedisQueueReading(queue, lengths, oldest)
        return readings

    def find_queues(self) -> set[str]:
        """Every queue bound to an exchange (kombu's binding sets; see the module docs), Celery's
        own included (the poller leaves them out). One ``SCAN`` over the database's keys
        (:data:`SCAN_COUNT` per call), then one pipeline of ``SMEMBERS``; a key that matches
        but is not a set is skipped. Binding sets under another ``global_keyprefix`` are not
        read: their prefixes go to :attr:`other_keyprefixes`.

        Raises:
            redis.RedisError, connection errors: as :meth:`read_raw`.

        """
        client, layout = self._open()
        keys, others = [], set()
        own = (layout.global_keyprefix + layout.binding_prefix).encode()
        for key in client.scan_iter(match=layout.any_binding_pattern, count=SCAN_COUNT):
            if key.startswith(own):
                keys.append(key)
            elif (other := layout.other_keyprefix(key)) is not None:
                others.add(other)
        self.other_keyprefixes = frozenset(others)
        if not keys:
            return set()
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.smembers(key)
        found = set()
        for members in pipe.execute(raise_on_error=False):
            if isinstance(members, Exception):
                continue
            found |= {q for m in members if (q := layout.bound_queue(m)) is not None}
        return found

    def read(self, queues: Sequence[str], sent_time: SentTime | None = None
             ) -> dict[str, QueueState]:
        """Every queue's :class:`QueueState` (Redis has no absent queues: an empty queue is a
        missing key, read as 0). Raises as :meth:`read_raw`.
        """
        return {q: to_queue_state(r, sent_time) for q, r in self.read_raw(queues).items()}

    def pending_messages(self, queue: str, offset: int = 0, limit: int = 100
                         ) -> list[PendingMessage]:
        """Waiting messages of ``queue`` in the order workers will take them, without
        consuming: the ``offset``-th to ``offset+limit-1``-th. Messages that do not parse are
        left out. Read-only and best effort: producers and consumers working meanwhile can make
        consecutive pages skip or repeat a message.

        Raises:
            ValueError: negative ``offset`` or ``limit`` < 1.
            redis.RedisError, connection errors: as :meth:`read_raw`.

        """
        if offset < 0 or limit < 1:
            raise ValueError("offset must be >= 0 and limit >= 1")
        client, layout = self._open()
        pipe = client.pipeline(transaction=False)
        for step in layout.steps:
            pipe.llen(layout.key(queue, step))
        lengths = dict(zip(layout.steps, (int(n) for n in pipe.execute()), strict=True))
        ranges = page_ranges(lengths, offset, limit)
        if not ranges:
            return []
        pipe = client.pipeline(transaction=False)
        for step, start, stop in ranges:
            pipe.lrange(layout.key(queue, step), start, stop)
        messages = []
        for (step, _, _), raw_items in zip(ranges, pipe.execute(), strict=True):
            for raw in reversed(raw_items):
                message = parse_message(raw, step)
                if message is not None:
                    messages.append(message)
        return messages

    def close(self) -> None:
        """Release the connection; the next read connects again."""
        self._client = None
        self._layout = None
        try:
            self.connection.release()
        except Exception as exc:  # closing a broken connection may fail; nothing to do
            log.debug("redis queue reader close error=%s", type(exc).__name__)
