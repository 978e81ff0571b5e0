"""The rows of ``celery-jobmon check``: each judged by a pure function from gathered facts.

:mod:`exporter.cli.check` gathers the facts (connections, broadcasts, a few seconds of events,
the producer's configuration); the ``judge_*`` functions here turn each into a
:class:`CheckResult` row with its fix, :func:`exit_code` decides the exit status and
:func:`format_results` prints the report. Nothing here does I/O. Secrets never appear: URLs go
through :func:`exporter.secrets.mask_url`, URLs inside error texts are masked, and
:func:`redact` removes every known password from the rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from exporter.logs import TLS_ADVICE, describe, tls_problem
from exporter.poll.inspect_replies import parse_active_queues
from exporter.secrets import Redactor, mask_url, mask_urls_in

#: Rows whose ``ok`` must be True for exit code 0.
REQUIRED = ("broker", "workers", "events")


@dataclass(frozen=True)
class CheckResult:
    """One row of the report: ``ok`` True (fine), False (missing) or None (unknown/skipped);
    ``fix`` says what to change when not fine.
    """

    name: str
    ok: bool | None
    message: str
    fix: str = ""


def redact(results: Iterable[CheckResult], secrets: Iterable[str]) -> list[CheckResult]:
    """The rows with every secret value in their message and fix replaced by ``**``."""
    clean = Redactor(secrets)
    return [dataclasses.replace(r, message=clean(r.message), fix=clean(r.fix)) for r in results]


def exit_code(results: Iterable[CheckResult]) -> int:
    """0 when every row of :data:`REQUIRED` is ok (True), else 1."""
    ok = {r.name: r.ok for r in results}
    return 0 if all(ok.get(name) is True for name in REQUIRED) else 1


def format_results(results: Iterable[CheckResult]) -> str:
    """The report as text, one row per line (``[ ok ]``/``[FAIL]``/``[ ?? ]``) with fixes."""
    marks = {True: "[ ok ]", False: "[FAIL]", None: "[ ?? ]"}
    lines = []
    for r in results:
        lines.append(f"{marks[r.ok]} {r.name}: {r.message}")
        if r.fix and r.ok is not True:
            lines.append(f"       fix: {r.fix}")
    return "\n".join(lines)



def judge_broker(url: str, error: BaseException | None) -> CheckResult:
    """The broker row from the connection attempt's error (``None``: connected)."""
    safe = mask_url(url)
    if error is None:
        return CheckResult("broker", True, f"connected to {safe}")
    problem = tls_problem(error)
    if problem is not None:
        return CheckResult("broker", False, f"cannot connect to {safe}: TLS: "
                           + problem.split("; ", 1)[0],
                           TLS_ADVICE if problem.startswith("certificate") else
                           "check that the broker's port speaks TLS (rediss://) or not "
                           "(redis://) as the URL says")
    return CheckResult(
        "broker", False,
        f"cannot connect to {safe}: {mask_urls_in(describe(error))}",
        "check --broker-url (or CELERY_BROKER_URL / JOBMON_BROKER_URL) and that the broker "
        "accepts connections from here",
    )


def judge_workers(ping: Sequence[Mapping[str, Any]] | None,
                  queues: Mapping[str, Any] | None) -> CheckResult:
    """The workers row from ``control.ping`` (``[{hostname: {"ok": "pong"}}]``) and the
    ``inspect active_queues`` reply.
    """
    hosts = sorted({h for reply in ping or () if isinstance(reply, Mapping) for h in reply})
    if not hosts:
        return CheckResult(
            "workers", False, "no worker answered ping",
            "start a worker on the same broker: celery -A proj worker -E",
        )
    consumed = parse_active_queues(queues)
    parts = [f"{h} ({', '.join(q.name for q in consumed[h]) or 'no queues'})" if h in consumed
             else f"{h} (queues unknown)" for h in hosts]
    return CheckResult("workers", True, f"{len(hosts)} answering: " + "; ".join(parts))


#: A worker's task events as ``check`` found them (:func:`task_events_before`).
TaskEvents = Literal["on", "switched_on", "off"] | None


def task_events_before(replies: Iterable[Any], hosts: Sequence[str]) -> dict[str, TaskEvents]:
    """Per worker, whether it sent task events *before* ``check`` broadcast ``enable_events``,
    from the replies (Celery answers ``{"ok": "task events already enabled"}`` when they were
    on, ``{"ok": "task events enabled"}`` when the broadcast switched them on): ``on``,
    ``switched_on``, ``off`` (no reply, or the worker could not), for every host in ``hosts``.
    """
    states: dict[str, TaskEvents] = {}
    for reply in replies:
        if not isinstance(reply, Mapping):
            continue
        for hostname, answer in reply.items():
            text = answer.get("ok") if isinstance(answer, Mapping) else None
            if isinstance(text, str):
                states[hostname] = "on" if "already" in text else "switched_on"
    return {h: states.get(h, "off") for h in hosts}


def judge_events(seen: Mapping[str, int], task_events_on: Mapping[str, TaskEvents] | None,
                 seconds: float) -> CheckResult:
    """The events row: do worker events reach the exporter, and were task events on.

    ``seen``: event type → count during the listening window; ``task_events_on``: hostname →
    whether the worker sent task events before the check (``on``/``switched_on``/``off`` from
    the ``enable_events`` replies, see :func:`task_events_before`; without ``--enable-events``
    ``on`` when its ``worker_send_task_events`` setting says so, else ``None`` because ``-E``
    does not show in the settings); ``None`` when no worker was asked. A worker whose task
    events the check itself switched on is said so: they were off, and stay on only because
    ``serve --enable-events`` keeps switching them on.
    """
    states = task_events_on or {}
    switched = sorted(h for h, on in states.items() if on == "switched_on")
    if switched:
        return CheckResult(
            "events", True, "task events were off on " + ", ".join(switched) + " and this "
            "check switched them on (serve --enable-events does the same every round)",
            "start workers with -E so that task events do not depend on the exporter")
    task_seen = sum(n for t, n in seen.items() if t.startswith("task-"))
    if task_seen:
        return CheckResult("events", True, f"{task_seen} task events in {seconds:g}s")
    if not seen.get("worker-heartbeat") and not seen.get("worker-online"):
        return CheckResult(
            "events", False, f"no worker event in {seconds:g}s",
            "workers must not run with --without-heartbeat, and must use the same broker "
            "(and global_keyprefix) as the exporter",
        )
    fix = "start workers with -E or run the exporter with --enable-events"
    off = sorted(h for h, on in states.items() if on == "off")
    if off:
        return CheckResult("events", False, "worker heartbeats arrive but task events are off "
                           "on " + ", ".join(off), fix)
    unknown = sorted(h for h, on in states.items() if on is None)
    if unknown or not states:
        return CheckResult("events", None, "worker heartbeats arrive; task events not "
                           f"confirmed (none seen in {seconds:g}s)", fix)
    return CheckResult("events", True, "worker heartbeats arrive and task events are on")


def judge_task_sent(seen: Mapping[str, int], producer_conf: Mapping[str, Any] | None,
                    seconds: float) -> CheckResult:
    """The task-sent row: from the producer app's ``task_send_sent_event`` when known, else
    from the events seen (only visible when tasks were sent during the window).
    """
    fix = ("set task_send_sent_event=True in the Celery configuration of the code that sends "
           "tasks (without it queue names and queue-wait times are often unknown)")
    if producer_conf is not None:
        if producer_conf.get("task_send_sent_event"):
            return CheckResult("task-sent events", True, "task_send_sent_event=True")
        return CheckResult("task-sent events", False, "task_send_sent_event is off", fix)
    if seen.get("task-sent"):
        return CheckResult("task-sent events", True, f"{seen['task-sent']} seen in {seconds:g}s")
    return CheckResult("task-sent events", None,
                       f"unknown, none seen in {seconds:g}s (pass --app to read the setting)",
                       fix)


def judge_result_backend(producer_conf: Mapping[str, Any] | None) -> CheckResult:
    """The result-backend row: retry with the real arguments needs ``result_extended``."""
    if producer_conf is None:
        return CheckResult("result backend", None,
                           "unknown (pass --app module:attr to read the producer's settings)")
    backend = producer_conf.get("result_backend")
    fix = ("set result_backend and result_extended=True in the producer's Celery "
           "configuration (retry then re-sends the original arguments)")
    if not backend or backend == "disabled":
        return CheckResult("result backend", False, "no result backend", fix)
    safe = mask_url(str(backend))
    if not producer_conf.get("result_extended"):
        return CheckResult("result backend", False, f"{safe} without result_extended", fix)
    return CheckResult("result backend", True, f"{safe} with result_extended")


def judge_history(error: BaseException | None, checked: bool, note: str = "") -> CheckResult:
    """The history row from the writability probe's error (``None``: writable) and its note on
    the schema (``"schema at revision 0006"``); ``checked`` False: ``--no-history``.
    """
    if not checked:
        return CheckResult("history database", None, "skipped (--no-history)")
    if error is None:
        return CheckResult("history database", True, f"writable; {note}" if note else "writable")
    return CheckResult("history database", False,
                       f"not writable: {mask_urls_in(describe(error))}",
                       "check --history-url and that the database exists and accepts writes "
                       "(celery-jobmon db upgrade)")
