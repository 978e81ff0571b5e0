"""Workflows seen in the events: which are in progress, which step is stuck behind a finished
predecessor, how often ``celery.chord_unlock`` polled a chord's header (pure, no I/O).

The model feeds :meth:`WorkflowTracker.observe` every task event it applies (under its lock);
``/metrics`` reads :meth:`WorkflowTracker.snapshot` at scrape time. What the events give
(Celery 5, checked on real chains, groups and chords — see :mod:`exporter.events.canvas`):
``root_id`` and ``parent_id`` on ``task-sent``/``task-received``, no group id. So:

- A *workflow* is a root with at least two tasks in memory: a chain, a chord, a group started
  from a task, or a task that sent others. A group or chord *applied at the top level* is not
  one workflow in the events: each header task is its own root (the callback joins the root of
  the header task that finished last, or of ``celery.chord_unlock``).
- A *step* waits behind a finished predecessor when its parent (``parent_id``, not itself)
  ended while the step has not started: a chord's callback once its header is done (Redis
  joins the header and sends the callback from the header task that finished last; other
  backends from ``celery.chord_unlock``), or the next link of a chain. The events cannot tell
  those two apart on a backend with native chords, so both count. A step is *stuck* when it
  has waited that way for longer than ``stuck_after`` seconds, measured from the later of its
  ``task-sent``, its parent's end and its ETA, on the exporter's clock (receipt times: no host's
  clock is compared with another's). A step whose parent was never seen (evicted, or sent
  before the exporter started) waits from its own ``task-sent``.
- ``celery.chord_unlock`` retries itself (``task-retried``) every second or so until the
  chord's header is ready; each retry counts under the callback's task name, read from its
  arguments.

Memory is bounded: at most ``max_steps`` tasks (least recently seen evicted first). Repairs
and lost tasks reach the tracker as the model's synthetic records. At start,
:meth:`WorkflowTracker.warm` takes the waiting steps the history holds.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from exporter.config import DEFAULT_CHORD_STUCK_AFTER
from exporter.events.canvas import CHORD_UNLOCK, chord_callback_name
from exporter.events.parse import parse_eta
from exporter.events.table import EVENT_STATE, TERMINAL_STATES

if TYPE_CHECKING:
    from exporter.history.workflow import WaitingStep

#: Tasks kept by default (each about 200 bytes besides its id, which the events and the model
#: share: 196 measured with 100,000 tasks in chains of 10).
DEFAULT_MAX_STEPS = 100_000

_WAITING, _RUNNING, _DONE = 0, 1, 2


def _no_state(task_id: str) -> str | None:
    """No task's state is known (a tracker fed without a model)."""
    return None


def _stage(state: str | None) -> int:
    """The tracker's stage of a Celery state (``None``: waiting)."""
    if state in TERMINAL_STATES:
        return _DONE
    return _RUNNING if state == "STARTED" else _WAITING


class _Step:
    """One task as the tracker knows it."""

    __slots__ = ("callback", "done_at", "eta", "name", "parent", "root", "since", "stage")

    def __init__(self, task_id: str) -> None:
        self.root = task_id
        self.parent: str | None = None
        self.name = ""
        self.stage = _WAITING
        self.since: float | None = None  # exporter time the step began to wait
        self.done_at: float | None = None  # exporter time it ended
        self.eta: float | None = None
        self.callback: str | None = None  # chord_unlock only: the callback's name label


class _Root:
    """Counts of one root's tasks in memory: ``members``, and ``open`` (not ended)."""

    __slots__ = ("members", "open")

    def __init__(self) -> None:
        self.members = 0
        self.open = 0

    def in_progress(self) -> bool:
        return self.members >= 2 and self.open > 0


@dataclass(frozen=True)
class StuckStep:
    """A step stuck behind a finished predecessor: its task id, name label, root and parent
    ids, and since when it waits (exporter clock, seconds since the epoch).
    """

    task_id: str
    name: str
    root_id: str
    parent_id: str
    waiting_since: float


@dataclass(frozen=True)
class WorkflowSnapshot:
    """The tracker at ``taken_at`` (exporter clock): ``in_progress`` workflows (roots with two
    or more tasks in memory, one of them not ended); ``stuck`` steps per name label
    ``{(name,): count}`` and their detail ``stuck_steps`` (oldest wait first);
    ``chord_unlock_retries`` per callback name label ``{(name,): count}`` since start;
    ``steps_in_memory`` and ``evictions`` of the bounded memory.
    """

    taken_at: float
    in_progress: int
    stuck: Mapping[tuple[str], int]
    stuck_steps: tuple[StuckStep, ...]
    chord_unlock_retries: Mapping[tuple[str], int]
    steps_in_memory: int
    evictions: int


class WorkflowTracker:
    """Workflows in progress, stuck steps and chord_unlock retries (see the module docs).

    Args:
        stuck_after: seconds a step may wait behind its finished parent (``--chord-stuck-after``).
        max_steps: tasks kept; the least recently seen is forgotten first.

    """

    def __init__(self, stuck_after: float = DEFAULT_CHORD_STUCK_AFTER,
                 max_steps: int = DEFAULT_MAX_STEPS) -> None:
        self.stuck_after = stuck_after
        self._max_steps = max_steps
        self._lock = threading.Lock()
        self._steps: OrderedDict[str, _Step] = OrderedDict()
        self._roots: dict[str, _Root] = {}
        self._waiting: dict[str, None] = {}  # steps with a parent that have not started
        self._in_progress = 0
        self._unlock_retries: dict[tuple[str], int] = {}
        self._evictions = 0

    def observe(self, event_type: str, event: Mapping[str, Any], name: str,
                label: Callable[[str], str],
                state_of: Callable[[str], str | None] = _no_state) -> None:
        """Take one applied task event: ``event`` as Celery sent it (``uuid``, ``root_id``,
        ``parent_id``, ``eta``, ``args``; ``local_received``: exporter receipt time, else
        ``timestamp``), ``name``: the task's name label (the model's), ``label``: the model's
        name ceiling, applied to a chord callback's name; ``state_of``: a task's state as the
        model holds it, ``None`` when unknown. Other event types are ignored.

        A task on its own (its own root, no parent; not ``celery.chord_unlock``) is not kept
        — most tasks, at the cost of one dictionary miss per event — until another task names
        it as parent: it is then added with the state the model holds for it, as is any task
        first seen after some of its events (a worker's events may overtake ``task-sent``).
        """
        state = EVENT_STATE.get(event_type)
        if state is None:
            return
        task_id = event["uuid"]
        with self._lock:
            step = self._steps.get(task_id)
            root, parent = event.get("root_id"), event.get("parent_id")
            now = event.get("local_received", event["timestamp"])
            if not (isinstance(parent, str) and parent and parent != task_id):
                parent = None
            if not (isinstance(root, str) and root):
                root = None
            if step is None:
                if parent is None and root in (None, task_id) and name != CHORD_UNLOCK:
                    return
                step = self._add(task_id)
                self._set_stage(task_id, step, _stage(state_of(task_id)), now)
            else:
                self._steps.move_to_end(task_id)
            if name:
                step.name = name
            if root is not None and root != step.root:
                self._move(step, root)
            if parent is not None and step.parent is None:
                step.parent = parent
                if parent not in self._steps and (known := state_of(parent)) is not None:
                    above = self._add(parent)
                    self._move(above, step.root)
                    self._set_stage(parent, above, _stage(known), now)
            if "eta" in event and (eta := parse_eta(event["eta"])) is not None:
                step.eta = eta
            if step.since is None:
                step.since = now
            if step.name == CHORD_UNLOCK and step.callback is None:
                callback = chord_callback_name(event.get("args"))
                if callback is not None:
                    step.callback = label(callback)
            if state in TERMINAL_STATES:
                self._set_stage(task_id, step, _DONE, now)
            elif state == "RETRY":
                if step.name == CHORD_UNLOCK:
                    key = (step.callback or "unknown",)
                    self._unlock_retries[key] = self._unlock_retries.get(key, 0) + 1
                if step.stage != _DONE:
                    self._set_stage(task_id, step, _WAITING, now)
            elif state == "STARTED":
                if step.stage == _WAITING:
                    self._set_stage(task_id, step, _RUNNING, now)
            if step.stage == _WAITING and step.parent is not None:
                self._waiting[task_id] = None

    def warm(self, steps: Iterable[WaitingStep], label: Callable[[str], str]) -> int:
        """Know, at start, the tasks the history holds as sent by another task and not started
        (:func:`~exporter.history.workflow.waiting_steps`), so a callback held before a restart
        still counts as stuck: each waits from its ``sent_at`` (else its last state change)
        and ETA — event timestamps, not the exporter's receipt times, for these only — and its
        parent is ended (``parent_finished_at``), still in progress, or unknown (no row: the
        step waits from its own send). Steps the tracker knows already are left alone. Returns
        how many were added.
        """
        added = 0
        with self._lock:
            for found in steps:
                if found.task_id in self._steps:
                    continue
                step = self._add(found.task_id)
                if found.root_id and found.root_id != step.root:
                    self._move(step, found.root_id)
                step.name = label(found.name) if found.name else ""
                step.parent = found.parent_id
                step.since = found.sent_at if found.sent_at is not None else found.state_ts
                step.eta = found.eta
                self._waiting[found.task_id] = None
                if found.parent_state is not None and found.parent_id not in self._steps:
                    parent = self._add(found.parent_id)
                    self._move(parent, step.root)
                    if found.parent_state in TERMINAL_STATES:
                        self._set_stage(found.parent_id, parent, _DONE,
                                        found.parent_finished_at or step.since)
                    elif found.parent_state == "STARTED":
                        self._set_stage(found.parent_id, parent, _RUNNING, step.since)
                added += 1
        return added

    def snapshot(self, now: float) -> WorkflowSnapshot:
        """The tracker at ``now`` (exporter clock): stuck steps judged against
        ``stuck_after``; a copy, safe to read without the lock.
        """
        with self._lock:
            stuck: list[StuckStep] = []
            for task_id in self._waiting:
                step = self._steps[task_id]
                since = self._waiting_since(step)
                if since is not None and now - since > self.stuck_after:
                    stuck.append(StuckStep(task_id, step.name or "unknown", step.root,
                                           step.parent or "", since))
            stuck.sort(key=lambda s: (s.waiting_since, s.task_id))
            by_name: dict[tuple[str], int] = {}
            for s in stuck:
                by_name[(s.name,)] = by_name.get((s.name,), 0) + 1
            return WorkflowSnapshot(
                taken_at=now, in_progress=self._in_progress, stuck=by_name,
                stuck_steps=tuple(stuck), chord_unlock_retries=dict(self._unlock_retries),
                steps_in_memory=len(self._steps), evictions=self._evictions)

    # -- helpers (lock held) -----------------------------------------------------------------

    def _waiting_since(self, step: _Step) -> float | None:
        """When ``step`` began to wait behind its ended parent; ``None`` while the parent runs."""
        assert step.parent is not None and step.since is not None
        parent = self._steps.get(step.parent)
        if parent is not None and parent.stage != _DONE:
            return None
        since = step.since
        if parent is not None and parent.done_at is not None:
            since = max(since, parent.done_at)
        if step.eta is not None:
            since = max(since, step.eta)
        return since

    def _add(self, task_id: str) -> _Step:
        step = _Step(task_id)
        self._steps[task_id] = step
        self._count(step.root, 1, 1)
        if len(self._steps) > self._max_steps:
            old_id, old = self._steps.popitem(last=False)
            self._waiting.pop(old_id, None)
            self._count(old.root, -1, -1 if old.stage != _DONE else 0)
            self._evictions += 1
        return step

    def _move(self, step: _Step, root: str) -> None:
        open_ = 1 if step.stage != _DONE else 0
        self._count(step.root, -1, -open_)
        step.root = root
        self._count(root, 1, open_)

    def _set_stage(self, task_id: str, step: _Step, stage: int, now: float) -> None:
        if stage == step.stage:
            return
        if stage == _DONE:
            self._count(step.root, 0, -1)
            step.done_at = now
        elif step.stage == _DONE:
            return  # a late event of an attempt that ended: the end stands
        elif stage == _WAITING:
            step.since = now
        step.stage = stage
        if stage != _WAITING:
            self._waiting.pop(task_id, None)

    def _count(self, root_id: str, members: int, open_: int) -> None:
        """Change a root's counts, keeping :attr:`_in_progress` in step."""
        root = self._roots.get(root_id)
        if root is None:
            root = self._roots[root_id] = _Root()
        before = root.in_progress()
        root.members += members
        root.open += open_
        after = root.in_progress()
        self._in_progress += int(after) - int(before)
        if root.members <= 0:
            del self._roots[root_id]
