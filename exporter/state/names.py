"""Task names as label values, with a ceiling on how many (``--max-task-names``).

A producer that builds task names at run time (``send_task(f"report.{customer}")``) would
otherwise grow one set of series per name without bound. The first ``max_names`` distinct names
are kept as they are; every later one becomes ``other``, and each distinct folded name is
counted once (``celery_jobmon_task_names_folded_total``). The model and the poller share one
instance (through :meth:`exporter.state.model.Model.label_name`), so events and inspect replies
agree on every label. Not thread-safe: the model's lock guards it.
"""

from __future__ import annotations

#: The label value of every name beyond the ceiling.
OTHER = "other"
#: How many folded names are remembered to count each one once (memory stays bounded).
FOLDED_MEMORY = 100_000


class TaskNames:
    """The label value of each task name (see the module docs).

    Args:
        max_names: distinct names kept as label values (``--max-task-names``).

    """

    def __init__(self, max_names: int) -> None:
        self._max_names = max_names
        self._kept: set[str] = set()
        self._folded: set[str] = set()
        self.folded_total = 0

    def label(self, name: str) -> str:
        """``name`` itself while it is among the first ``max_names`` distinct names, else
        :data:`OTHER` (counting ``name`` in :attr:`folded_total` the first time).
        """
        if name in self._kept:
            return name
        if len(self._kept) < self._max_names:
            self._kept.add(name)
            return name
        if name not in self._folded and len(self._folded) < FOLDED_MEMORY:
            self._folded.add(name)
            self.folded_total += 1
        return OTHER
