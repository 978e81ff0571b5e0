"""SQL execution history: one row per Celery task id, written in batches from task events.

Typical wiring (``serve``)::

    engine = create_history_engine(url)          # None: the default SQLite file
    upgrade(engine)                              # --no-history-upgrade: needs_upgrade()
    for task in unfinished(engine, since_seconds=86400, limit=100_000):
        ...                                      # warm the in-memory task index
    writer = HistoryWriter(engine, retention=30 * 86400)
    writer.start()
    ...  writer.submit(event)                    # from the event consumer, per task event
    ...  writer.stats()                          # at scrape time
    writer.stop(timeout=10)                      # on SIGTERM, after the consumer stopped

Modules: :mod:`.models` (tables), :mod:`.db` (engine, migrations), :mod:`.merge` (event →
row rules, pure), :mod:`.store` (batched upsert), :mod:`.writer` (the writer thread),
:mod:`.process` (``serve``'s default: that writer in a child process), :mod:`.queries`
(reads), :mod:`.retention` (prune), :mod:`.audit` (actions).
"""

from exporter.events.table import STATES
from exporter.history.audit import record_action, record_retry
from exporter.history.db import (
    create_history_engine,
    current_revision,
    default_history_url,
    head_revision,
    needs_upgrade,
    safe_url,
    upgrade,
)
from exporter.history.orm import ActionAudit, HistoryBase, TaskExecution
from exporter.history.queries import (
    Execution,
    FailureGroup,
    InvalidCursor,
    Page,
    TaskStats,
    UnfinishedTask,
    failure_groups,
    get_execution,
    list_executions,
    task_stats,
    unfinished,
)
from exporter.history.retention import prune
from exporter.history.writer import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_DELAY,
    DEFAULT_PRUNE_INTERVAL,
    DEFAULT_RETRY_MAX,
    DROP_REASONS,
    HistoryStats,
    HistoryWriter,
)

__all__ = [
    "DEFAULT_BATCH_SIZE", "DEFAULT_MAX_DELAY",
    "DEFAULT_PRUNE_INTERVAL", "DEFAULT_RETRY_MAX", "DROP_REASONS",
    "STATES", "ActionAudit", "Execution", "FailureGroup", "HistoryBase",
    "HistoryStats", "HistoryWriter", "InvalidCursor", "Page", "TaskExecution", "TaskStats",
    "UnfinishedTask", "create_history_engine", "current_revision", "default_history_url",
    "failure_groups", "get_execution", "head_revision", "list_executions", "needs_upgrade",
    "prune", "record_action", "record_retry", "safe_url", "task_stats", "unfinished", "upgrade",
]
