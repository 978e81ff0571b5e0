"""Task names as label values, with a ceiling on how many (``--max-task-names``).

A producer that builds task names at run time (``send_task(f"report.{customer}")``) would
otherwise grow one set of series per name without bound. The first ``max_names`` distinct names
are kept as they are; every later one becomes ``other``, and each distinct folded name is
counted once (``celery_jobmon_task_names_folded_total``; a warning is logged when folding
starts, then at most every 5 minutes). The model and the poller share one instance (through
:meth:`exporter.state.model.Model.label_name`), so events and inspect replies agree on every
label. Not thread-safe: the model's lock guards it.

Names a worker registered come first: the poller reports the names the workers answer to
``inspect registered`` (:meth:`TaskNames.set_registered`). A name no worker registered (yet) —
junk such as ``send_task`` of names no worker knows, which workers reject — may take at most
:data:`UNREGISTERED_SHARE` of the ceiling, so a flood of them cannot fold a real task into
``other`` later. Until a worker answered ``registered`` (no poll round yet, or workers that do
not answer inspect) names are kept first come, first served. A kept name keeps its label for
good (a series never changes its name).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from exporter.logs import Throttled

log = logging.getLogger(__name__)

#: The label value of every name beyond the ceiling.
OTHER = "other"
#: How many folded names are remembered to count each one once (memory stays bounded).
FOLDED_MEMORY = 100_000
#: The part of ``max_names`` that names no worker registered may take.
UNREGISTERED_SHARE = 0.5
#: Registered names remembered (workers register a few hundred tasks, not more).
REGISTERED_MEMORY = 100_000


class TaskNames:
    """The label value of each task name (see the module docs).

    Args:
        max_names: distinct names kept as label values (``--max-task-names``).

    """

    def __init__(self, max_names: int) -> None:
        self._max_names = max_names
        self._max_unregistered = int(max_names * UNREGISTERED_SHARE)
        self._kept: set[str] = set()
        self._registered: set[str] = set()
        self._unregistered = 0
        self._folded: set[str] = set()
        self._throttled = Throttled(log)
        self.folded_total = 0

    def set_registered(self, names: Iterable[str]) -> None:
        """Add names workers registered (``inspect registered``, from the poller): they are
        kept before names no worker registered.
        """
        for name in names:
            if len(self._registered) >= REGISTERED_MEMORY:
                break
            self._registered.add(name)
        self._unregistered = len(self._kept - self._registered)

    def label(self, name: str) -> str:
        """``name`` itself while it is kept (see the module docs), else :data:`OTHER`
        (counting ``name`` in :attr:`folded_total` the first time).
        """
        if name in self._kept:
            return name
        if len(self._kept) < self._max_names:
            if name in self._registered:
                self._kept.add(name)
                return name
            if not self._registered or self._unregistered < self._max_unregistered:
                self._kept.add(name)
                self._unregistered += 1
                return name
        if name not in self._folded and len(self._folded) < FOLDED_MEMORY:
            self._folded.add(name)
            self.folded_total += 1
            self._throttled.log(
                logging.WARNING, "folded",
                "task names folded into name=\"other\" total=%d kept=%d (%d not registered by "
                "any worker) latest=%r: raise --max-task-names, or stop sending tasks no "
                "worker knows", self.folded_total, len(self._kept), self._unregistered,
                name[:200])
        return OTHER
