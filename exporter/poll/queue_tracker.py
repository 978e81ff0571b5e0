"""Which broker queues the poller reads each round, and which it shows.

A queue is read when it is

- given with ``--queue`` (always read, always shown);
- consumed by a worker (``inspect active_queues``);
- found on the broker or in the events: Redis binding keys, the RabbitMQ management API,
  queue names of ``task-sent`` events (and of the unfinished executions the history warmed);
- shown already.

A queue is shown while a worker consumed it or it held messages within
``--queue-forget-after`` seconds: a queue that holds messages is never forgotten, however
long ago its last consumer went away, and a queue found on the broker is shown as soon as it
holds a message. An empty queue nobody consumes is forgotten after ``--queue-forget-after``
(a found one is still read each round, and comes back with its next message).

Celery's own queues — the event queues (``celeryev.<id>``) and the remote-control queues
(``<node>.celery.pidbox``, ``<id>.reply.celery.pidbox``) — are never taken from what is
found: they are not task queues, and a reply queue of a client gone for good can hold replies
nobody will read.

Pure bookkeeping: no I/O, the caller passes the clock.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from exporter.poll.snapshot import QueueState

log = logging.getLogger(__name__)

#: Exchange of Celery's events (``event_exchange``); its queues are ``celeryev.<id>``.
EVENT_EXCHANGE = "celeryev"
#: Suffix of Celery's remote-control exchanges (``<control_exchange>.pidbox``,
#: ``reply.<control_exchange>.pidbox``) and of their queues.
PIDBOX_SUFFIX = ".pidbox"


def is_celery_internal(name: str) -> bool:
    """Whether a queue (or exchange) name is one of Celery's own: events or remote control."""
    return (name == EVENT_EXCHANGE or name.startswith(EVENT_EXCHANGE + ".")
            or name.endswith(PIDBOX_SUFFIX))


class QueueTracker:
    """Remembers when each queue was last consumed or held messages (see the module docs).

    Args:
        configured: ``--queue`` names, read and shown whatever happens.
        forget_after: seconds (``--queue-forget-after``) an empty queue nobody consumes is
            still shown.

    """

    def __init__(self, configured: Iterable[str], forget_after: float) -> None:
        self.configured = tuple(dict.fromkeys(configured))
        self.forget_after = forget_after
        self._seen: dict[str, float] = {}

    def to_read(self, now: float, consumed: Iterable[str], found: Iterable[str]) -> list[str]:
        """The queues to read this round, sorted; ``consumed`` (queue names workers consume
        now) count as seen at ``now``; ``found`` (broker and event discoveries) are read
        without being shown yet, Celery's own queues left out.
        """
        for name in consumed:
            self._seen[name] = now
        candidates = {name for name in found if name and not is_celery_internal(name)}
        return sorted(set(self.configured) | set(self._seen) | candidates)

    def to_show(self, now: float, states: Mapping[str, QueueState]) -> list[str]:
        """The queues to show after this round's reading ``states`` (by name), sorted.

        A queue holding messages counts as seen at ``now``; a queue seen longer than
        ``forget_after`` ago (empty and unconsumed since) is forgotten, unless configured.
        """
        for name, state in states.items():
            if sum(state.lengths.values()) > 0:
                if name not in self._seen and name not in self.configured:
                    log.info("queue found queue=%s messages=%d", name,
                             sum(state.lengths.values()))
                self._seen[name] = now
        for name in [n for n, t in self._seen.items()
                     if now - t > self.forget_after and n not in self.configured]:
            del self._seen[name]
            log.info("queue forgotten queue=%s", name)
        return sorted(set(self.configured) | set(self._seen))
