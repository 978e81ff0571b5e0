"""What a source of truth says about a task, as a :class:`Finding`; pure parsers of the result
backend's meta and of the workers' ``inspect query_task`` replies (tested with recorded
literals, no I/O).

Result backend (``backend.get_task_meta``, the dict ``AsyncResult`` reads): ``status``
SUCCESS, FAILURE or REVOKED is an outcome, stamped with ``date_done`` (the worker's clock when
it stored the result: an ISO 8601 string from key-value backends, a naive UTC ``datetime``
from the database backend); ``result`` is the return value (SUCCESS) or the exception
(FAILURE, already turned into an exception instance by Celery), ``traceback`` the formatted
traceback. With ``result_extended`` the meta also has ``name``, ``args``, ``kwargs``,
``worker``, ``retries`` and ``queue``. Any other status (PENDING: unknown to the backend,
STARTED, RETRY, RECEIVED) says nothing final: no finding.

A REVOKED result is not always the end of an execution. Celery 5.7's ``revoke`` control
command stores REVOKED (``TaskRevokedError('revoked')``) as soon as a worker acknowledges the
revoke of a task that it is not running itself: true for a task waiting in its queue or held by
a worker (every worker that acknowledged discards it when it comes), but a task another worker
is running goes on (a revoke without ``terminate`` does not stop it) and stores its real outcome
later. Such a finding :func:`needs_workers`: a worker running the task overrules it. A worker
that terminated the task (``terminated``) or discarded it as expired (``expired``) stored an end.

Workers (``inspect query_task`` reply ``{hostname: {task_id: [where, request info]}}``):
``active`` is a task running now (STARTED, stamped with the request's ``time_start``),
``reserved`` and ``scheduled`` a task the worker holds and has not started (RECEIVED, no time);
``ready`` (just finished, not yet forgotten) says nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from exporter.events.table import SOURCE_RESULT_BACKEND, SOURCE_WORKERS

#: Result backend statuses that end an execution: a finding.
BACKEND_OUTCOMES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})
#: Reasons in a REVOKED result (``TaskRevokedError(reason)``) that end the execution: the worker
#: killed it, or discarded it as expired. ``revoked`` may be an acknowledgement only.
FINAL_REVOKE_REASONS = frozenset({"terminated", "expired"})
#: ``inspect query_task`` placement → the state it means.
HELD_STATE: Mapping[str, str] = {"active": "STARTED", "reserved": "RECEIVED",
                                 "scheduled": "RECEIVED"}
#: Characters of a repr kept by the parsers (the history caps further).
MAX_REPR_CHARS = 65536


@dataclass(frozen=True)
class Finding:
    """What one source says of one task.

    ``state``: SUCCESS, FAILURE or REVOKED (``source`` ``result_backend``), STARTED or
    RECEIVED (``source`` ``workers``). ``timestamp``: seconds since the epoch on the worker's
    clock — ``date_done`` of the result, ``time_start`` of a running task — or ``None``
    (a reserved task). ``name``, ``hostname`` (the worker), ``queue``, ``args``/``kwargs``
    (reprs) and ``retries`` when the source knows them (the result backend with
    ``result_extended``; the workers always know name, arguments and worker); ``result``
    (repr of the return value), ``exception`` (repr, as Celery's ``task-failed`` sends it:
    ``ValueError('boom')``) and ``traceback`` for SUCCESS and FAILURE; ``revoke_reason``
    for REVOKED: ``revoked``, ``terminated`` or ``expired`` (the argument of the stored
    ``TaskRevokedError``), ``None`` when the result does not say.
    """

    task_id: str
    state: str
    source: str
    timestamp: float | None
    name: str | None = None
    hostname: str | None = None
    queue: str | None = None
    args: str | None = None
    kwargs: str | None = None
    retries: int | None = None
    result: str | None = None
    exception: str | None = None
    traceback: str | None = None
    revoke_reason: str | None = None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # a result whose __repr__ raises
        text = f"<unrepresentable {type(value).__name__}>"
    return text[:MAX_REPR_CHARS]


def epoch_seconds(value: Any) -> float | None:
    """``date_done`` as seconds since the epoch: a ``datetime`` (naive = UTC) or an ISO 8601
    string; ``None`` for anything else or a non-finite value.
    """
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    seconds = value.timestamp()
    return seconds if math.isfinite(seconds) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def finding_from_meta(task_id: str, meta: Mapping[str, Any] | None) -> Finding | None:
    """The outcome the result backend stored for ``task_id`` (``meta``: what
    ``backend.get_task_meta`` returned), or ``None`` when it holds none (see the module docs).
    """
    if not isinstance(meta, Mapping):
        return None
    state = meta.get("status")
    if state not in BACKEND_OUTCOMES:
        return None
    result = meta.get("result")
    returned = exception = reason = None
    if state == "SUCCESS":
        returned = _repr(result)
    elif isinstance(result, BaseException):
        exception = _repr(result)
        if state == "REVOKED" and result.args:
            reason = _text(result.args[0])
    args, kwargs = meta.get("args"), meta.get("kwargs")
    return Finding(
        task_id=task_id, state=state, source=SOURCE_RESULT_BACKEND,
        timestamp=epoch_seconds(meta.get("date_done")), name=_text(meta.get("name")),
        hostname=_text(meta.get("worker")), queue=_text(meta.get("queue")),
        args=None if args is None else _repr(args),
        kwargs=None if kwargs is None else _repr(kwargs), retries=_int(meta.get("retries")),
        result=returned, exception=exception, traceback=_text(meta.get("traceback")),
        revoke_reason=reason,
    )


def needs_workers(finding: Finding) -> bool:
    """Whether a result backend's finding holds only if no worker is running the task: a
    REVOKED result that is not an end by itself (reason ``revoked`` or unknown; see the module
    docs). Every other finding stands alone.
    """
    return finding.state == "REVOKED" and finding.revoke_reason not in FINAL_REVOKE_REASONS


def findings_from_query(replies: Mapping[str, Any] | None, ids: Iterable[str]
                        ) -> dict[str, Finding]:
    """The tasks among ``ids`` that a worker holds, from an ``inspect query_task`` broadcast's
    replies ``{hostname: {task_id: [where, info]}}``; malformed entries are skipped. A task
    two workers report (a redelivery in flight) takes the one furthest along (active first).
    """
    wanted = set(ids)
    found: dict[str, Finding] = {}
    for hostname, tasks in sorted((replies or {}).items()):
        if not isinstance(tasks, Mapping):
            continue
        for task_id, entry in tasks.items():
            if task_id not in wanted or not isinstance(entry, (list, tuple)) or len(entry) != 2:
                continue
            state = HELD_STATE.get(entry[0])
            if state is None:
                continue
            info = entry[1] if isinstance(entry[1], Mapping) else {}
            start = info.get("time_start")
            timestamp = float(start) if isinstance(start, (int, float)) and not isinstance(
                start, bool) and math.isfinite(start) and state == "STARTED" else None
            delivery = info.get("delivery_info")
            queue = _text(delivery.get("routing_key")) if isinstance(delivery, Mapping) else None
            previous = found.get(task_id)
            if previous is not None and previous.state == "STARTED":
                continue
            args, kwargs = info.get("args"), info.get("kwargs")
            found[task_id] = Finding(
                task_id=task_id, state=state, source=SOURCE_WORKERS, timestamp=timestamp,
                name=_text(info.get("name")) or _text(info.get("type")),
                hostname=_text(info.get("hostname")) or hostname, queue=queue,
                args=None if args is None else _repr(args),
                kwargs=None if kwargs is None else _repr(kwargs))
    return found
