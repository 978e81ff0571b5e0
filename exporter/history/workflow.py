"""A workflow's tree from the history: every execution of one root, nested by ``parent_id``.

:func:`workflow_of` reads the rows (the root by primary key, the rest one range of the partial
``root_id`` index, at most ``limit`` + 1); :func:`build_tree` nests them (pure). What the tree
can show is what the events say (see :mod:`exporter.events.canvas`): a group's members are
siblings under the task that sent them; a group or chord applied at the top level has one root
per header task, so its tree holds the
header task asked about and, under the header task that finished last, the callback.
:func:`waiting_steps` reads what the workflow tracker needs at start (tasks a finished task
sent that have not started).

A manual retry (the action API's) is a new task with a root of its own, so it is not in the
tree; each node lists instead its :class:`ManualRetry` rows (:func:`manual_retries`: its retries
and theirs, from the audit trail, indexed by task id; states from their rows): a chord callback
that failed and was fixed by a retry shows that retry SUCCESS.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import Table, select, union_all
from sqlalchemy.exc import SQLAlchemyError

from exporter.history.orm import ACTION_AUDIT, TASK_EXECUTION
from exporter.history.queries import Bind, _rows
from exporter.logs import describe

if TYPE_CHECKING:
    from exporter.state.workflows import WorkflowTracker

log = logging.getLogger(__name__)

_T: Table = TASK_EXECUTION  # type: ignore[assignment]
_C = _T.c
_AUDIT: Table = ACTION_AUDIT  # type: ignore[assignment]
#: Retries of retries followed from a node (far above any --max-manual-retries in use).
MAX_RETRY_DEPTH = 20
#: Task ids per ``IN (…)`` list.
_CHUNK = 500
#: Most executions one tree holds by default; more are left out and the answer says so.
DEFAULT_MAX_NODES = 1000
#: Deepest nesting: the children of a node this deep (a chain of more links) continue at the
#: top level, their ``parent_id`` saying where (JSON encoders and templates recurse).
MAX_DEPTH = 50


@dataclass(frozen=True)
class ManualRetry:
    """A manual retry of a workflow's execution (or of one of its retries): the new task id,
    the task it retried (``retry_of``), its Celery ``state`` now (``None``: its row was
    pruned) and ``at``, when it was sent (the audit row's time, epoch seconds).
    """

    task_id: str
    retry_of: str
    state: str | None
    at: float


@dataclass
class WorkflowNode:
    """One execution in a workflow's tree. Times are float seconds since the epoch (event
    timestamps: ``sent_at`` task-sent, ``started_at`` task-started of the latest attempt,
    ``finished_at`` the final state's); ``runtime`` seconds; ``group_id`` only on
    ``celery.chord_unlock`` (the group it waits for); ``children`` in order of sending;
    ``manual_retries``: its manual retries and theirs, first sent first.
    """

    task_id: str
    name: str | None
    state: str
    parent_id: str | None
    group_id: str | None
    retries: int
    sent_at: float | None
    started_at: float | None
    finished_at: float | None
    runtime: float | None
    state_ts: float
    children: list[WorkflowNode] = field(default_factory=list)
    manual_retries: list[ManualRetry] = field(default_factory=list)


@dataclass(frozen=True)
class Workflow:
    """The tree of ``root_id`` (``nodes``: the executions without a parent among them, the
    root first), ``count`` executions in it, ``truncated`` when the history holds more than
    the ``limit`` asked for (those sent last are left out).
    """

    root_id: str
    nodes: list[WorkflowNode]
    count: int
    truncated: bool


def _order(node: WorkflowNode) -> tuple[float, str]:
    first = node.sent_at if node.sent_at is not None else node.started_at
    return (first if first is not None else node.state_ts, node.task_id)


def build_tree(root_id: str, nodes: Iterable[WorkflowNode],
               max_depth: int = MAX_DEPTH) -> list[WorkflowNode]:
    """Nest ``nodes`` by ``parent_id`` (in place: each gets its ``children``) and return the
    top level: the root, then every node whose parent is not among them (a parent pruned or
    never seen, or none), each list in order of sending. A node that names itself as parent
    (``celery.chord_unlock`` retrying) is not its own child. The children of a node at depth
    ``max_depth`` (the top level is depth 1) move to the top level, after the root.
    """
    by_id = {node.task_id: node for node in nodes}
    top: list[WorkflowNode] = []
    for node in sorted(by_id.values(), key=_order):
        parent = by_id.get(node.parent_id) if node.parent_id not in (None, node.task_id) else None
        (parent.children if parent is not None else top).append(node)
    level, depth = top, 1
    while level:
        below = [child for node in level for child in node.children]
        if depth == max_depth:
            for node in level:
                node.children = []
            top.extend(below)
            depth = 0
        level, depth = below, depth + 1
    top.sort(key=lambda node: (node.task_id != root_id, *_order(node)))
    return top


def _chunks(ids: list[str]) -> list[list[str]]:
    return [ids[i:i + _CHUNK] for i in range(0, len(ids), _CHUNK)]


def manual_retries(bind: Bind, task_ids: Iterable[str], max_depth: int = MAX_RETRY_DEPTH
                   ) -> dict[str, list[ManualRetry]]:
    """The manual retries of each of ``task_ids`` and the retries of those (``max_depth``
    levels), first sent first; tasks never retried are absent. One audit query per level
    (``action_audit.task_id`` is indexed; ``task_execution.retry_of`` is not), one for the
    states.
    """
    origin = {task_id: task_id for task_id in task_ids}
    found: dict[str, list[tuple[float, str, str]]] = {}
    for _ in range(max_depth):
        if not origin:
            break
        below: dict[str, str] = {}
        for chunk in _chunks(sorted(origin)):
            for retried, detail, at in _rows(bind, select(
                    _AUDIT.c.task_id, _AUDIT.c.detail, _AUDIT.c.at)
                    .where(_AUDIT.c.task_id.in_(chunk), _AUDIT.c.action == "retry")
                    .order_by(_AUDIT.c.at, _AUDIT.c.id)):
                new_id = detail.get("new_task_id") if isinstance(detail, dict) else None
                if isinstance(new_id, str) and new_id not in below:
                    below[new_id] = origin[retried]
                    found.setdefault(origin[retried], []).append((at, new_id, retried))
        origin = below
    new_ids = sorted({new_id for items in found.values() for _, new_id, _ in items})
    states: dict[str, str] = {}
    for chunk in _chunks(new_ids):
        states.update((row.task_id, row.state) for row in _rows(
            bind, select(_C.task_id, _C.state).where(_C.task_id.in_(chunk))))
    return {task_id: [ManualRetry(new_id, retried, states.get(new_id), at)
                      for at, new_id, retried in sorted(items)]
            for task_id, items in found.items()}


def workflow_of(bind: Bind, task_id: str, limit: int = DEFAULT_MAX_NODES) -> Workflow | None:
    """The workflow ``task_id`` belongs to (its ``root_id``, or itself when it has none), at
    most ``limit`` executions, first sent first, each with its :func:`manual_retries`;
    ``None`` when the history has no such task.
    """
    found = _rows(bind, select(_C.root_id).where(_C.task_id == task_id))
    if not found:
        return None
    root_id = found[0].root_id or task_id
    columns = (_C.task_id, _C.name, _C.state, _C.parent_id, _C.group_id, _C.retries,
               _C.sent_at, _C.started_at, _C.finished_at, _C.runtime, _C.state_ts)
    # The root by its primary key, the others off the partial root_id index (it holds the
    # rows whose root is not themselves; the condition must be written out to be used).
    tree = union_all(
        select(*columns).where(_C.task_id == root_id),
        select(*columns).where(_C.root_id == root_id, _C.root_id != _C.task_id),
    ).subquery()
    rows = _rows(bind, select(tree)
                 .order_by(tree.c.sent_at.is_(None), tree.c.sent_at, tree.c.state_ts,
                           tree.c.task_id)
                 .limit(limit + 1))
    nodes = [WorkflowNode(**row._mapping) for row in rows[:limit]]
    if task_id not in {node.task_id for node in nodes}:  # asked for one sent late: keep it
        asked = _rows(bind, select(*columns).where(_C.task_id == task_id))
        nodes[-1:] = [WorkflowNode(**asked[0]._mapping)]
    retries = manual_retries(bind, [node.task_id for node in nodes])
    for node in nodes:
        node.manual_retries = retries.get(node.task_id, [])
    return Workflow(root_id, build_tree(root_id, nodes), len(nodes), len(rows) > limit)


@dataclass(frozen=True)
class WaitingStep:
    """A task not started yet that another task sent (``parent_id``), to warm the workflow
    tracker at start: its ``name``, ``root_id``, ``sent_at``, ``state_ts``, ``eta`` (event
    timestamps, seconds since the epoch), and its parent's ``parent_state`` and
    ``parent_finished_at`` (``None`` when the history has no row of the parent).
    """

    task_id: str
    name: str | None
    root_id: str | None
    parent_id: str
    sent_at: float | None
    state_ts: float
    eta: float | None
    parent_state: str | None
    parent_finished_at: float | None


#: States of a task that was sent and has not started (a retry waits for its next attempt).
WAITING_STATES = ("PENDING", "RECEIVED", "RETRY")


def waiting_steps(bind: Bind, since_seconds: float, limit: int, *, now: float | None = None
                  ) -> list[WaitingStep]:
    """Tasks in :data:`WAITING_STATES` with a parent other than themselves, whose state changed
    in the last ``since_seconds``, newest first, at most ``limit``, each with its parent's
    state (one range of the (state, state_ts) index, the parent by primary key).

    ``now``: reference time, epoch seconds (default ``time.time()``).
    """
    reference = time.time() if now is None else now
    parent = _T.alias("parent")
    query = (
        select(_C.task_id, _C.name, _C.root_id, _C.parent_id, _C.sent_at, _C.state_ts, _C.eta,
               parent.c.state.label("parent_state"),
               parent.c.finished_at.label("parent_finished_at"))
        .select_from(_T.outerjoin(parent, parent.c.task_id == _C.parent_id))
        .where(_C.state.in_(WAITING_STATES), _C.parent_id.is_not(None),
               _C.parent_id != _C.task_id, _C.state_ts >= reference - since_seconds)
        .order_by(_C.state_ts.desc(), _C.task_id.desc())
        .limit(limit)
    )
    return [WaitingStep(**row._mapping) for row in _rows(bind, query)]


def warm_tracker(tracker: WorkflowTracker, bind: Bind, since_seconds: float, limit: int,
                 label: Callable[[str], str]) -> int:
    """Give the workflow tracker the :func:`waiting_steps` of the history at start (a chord
    callback held across a restart still counts as stuck); a failed read is logged and the
    tracker starts empty. Returns how many steps it took.
    """
    try:
        steps = waiting_steps(bind, since_seconds, limit)
    except SQLAlchemyError as exc:
        log.warning("workflow steps not read from the history error=%s", describe(exc))
        return 0
    added = tracker.warm(steps, label)
    log.info("history waiting workflow steps=%d", added)
    return added
