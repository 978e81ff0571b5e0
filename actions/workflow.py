"""The workflow read: the tree of the workflow a task belongs to, from the history
(:func:`exporter.history.workflow.workflow_of`), as the API and the job browser show it.
"""

from __future__ import annotations

from actions.context import ActionContext
from actions.errors import TaskNotFound, history_errors
from actions.schemas import WorkflowRetry, WorkflowTask, WorkflowTree, utc
from exporter.history.workflow import DEFAULT_MAX_NODES, WorkflowNode, workflow_of


def _task(node: WorkflowNode) -> WorkflowTask:
    return WorkflowTask(
        task_id=node.task_id, name=node.name, state=node.state, parent_id=node.parent_id,
        runtime_seconds=node.runtime,
        sent_at=utc(node.sent_at), started_at=utc(node.started_at),
        finished_at=utc(node.finished_at), retries=node.retries, group_id=node.group_id,
        children=[_task(child) for child in node.children],
        manual_retries=[WorkflowRetry(task_id=r.task_id, retry_of=r.retry_of, state=r.state,
                                      sent_at=utc(r.at)) for r in node.manual_retries])


def get_workflow(ctx: ActionContext, task_id: str,
                 max_nodes: int = DEFAULT_MAX_NODES) -> WorkflowTree:
    """The tree of every execution sharing ``task_id``'s root (at most ``max_nodes``, then
    ``truncated``), nested by parent.

    Raises:
        TaskNotFound: not in the history. HistoryDisabled / HistoryUnavailable.

    """
    with history_errors():
        found = workflow_of(ctx.engine(), task_id, max_nodes)
    if found is None:
        raise TaskNotFound(f"no task {task_id!r} in the history (unknown, or pruned)")
    return WorkflowTree(task_id=task_id, root_id=found.root_id, count=found.count,
                        truncated=found.truncated, tasks=[_task(n) for n in found.nodes])
