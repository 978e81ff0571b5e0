"""Open the SQL history for ``serve``: engine, schema, warm-up rows and the writer
(in a child process, :mod:`exporter.history.process`, or a thread: ``--history-writer``).

``serve`` keeps running without history when the database cannot be opened at start (a
warning, ``celery_jobmon_history_enabled 0``), unless ``--history-required``: then it exits
with the reason. Once open, outages are the writer's business (kept in memory, retried with
backoff, counted).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from exporter.config import Settings
from exporter.history import (
    HistoryWriter,
    UnfinishedTask,
    create_history_engine,
    default_history_url,
    needs_upgrade,
    safe_url,
    unfinished,
    upgrade,
)
from exporter.history.process import WriterProcess
from exporter.logs import describe

log = logging.getLogger(__name__)


class HistoryUnavailable(RuntimeError):
    """The history database could not be opened and ``--history-required`` is set."""


@dataclass
class OpenHistory:
    """An open history: the engine, the (not yet started) writer and the unfinished executions
    to warm the task index with.
    """

    engine: Engine
    writer: HistoryWriter | WriterProcess
    unfinished: list[UnfinishedTask]

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (up to ``timeout`` seconds), then release the connections."""
        self.writer.stop(timeout)
        self.engine.dispose()


def history_url(settings: Settings) -> str:
    """``--history-url``, else the default SQLite file (its directory is created)."""
    return settings.history_url or default_history_url()


def open_history(settings: Settings) -> OpenHistory | None:
    """Open the history as configured; ``None`` when it is off or could not be opened.

    Raises:
        HistoryUnavailable: it could not be opened and ``settings.history_required`` is set.

    """
    if not settings.history:
        return None
    logging.getLogger("alembic").setLevel(logging.WARNING)
    url = "<default>"
    try:
        url = history_url(settings)
        engine = create_history_engine(url)
        if settings.history_upgrade:
            upgrade(engine)
        elif needs_upgrade(engine):
            raise RuntimeError("the schema is behind: run `celery-jobmon db upgrade`")
        # Warm with what may still finish: as many as the task index holds, newest first.
        since = settings.history_retention or 7 * 86400.0
        warm = unfinished(engine, since_seconds=since, limit=settings.max_tasks_in_memory)
    except Exception as exc:
        reason = f"history database {safe_url(url) if '://' in url else url} unusable: " \
                 f"{describe(exc)}"
        if settings.history_required:
            raise HistoryUnavailable(reason) from None
        log.warning("%s; running without history (metrics only)", reason)
        return None
    options: dict[str, Any] = {"capacity": settings.history_queue_size,
                               "max_field_bytes": settings.history_max_field_bytes,
                               "retention": settings.history_retention or None,
                               "max_rows": settings.history_max_rows or None}
    writer: HistoryWriter | WriterProcess
    if settings.history_writer == "thread":
        writer = HistoryWriter(engine, **options)
    else:
        writer = WriterProcess(url, **options, log_level=settings.log_level,
                               log_format=settings.log_format, secrets=settings.secrets())
    log.info("history url=%s unfinished=%d", safe_url(engine), len(warm))
    return OpenHistory(engine, writer, warm)
