"""``celery-jobmon check``: tell a new user what is missing for the metrics, and how to fix it.

:func:`run_checks` gathers the facts (broker connection, ``ping``, ``inspect active_queues``,
``enable_events`` replies, a few seconds of events, the producer app's configuration, the
history database) and pure ``judge_*`` functions turn them into :class:`CheckResult` rows.
Secrets never appear: URLs go through :func:`exporter.secrets.mask_url`, URLs inside error texts
are masked, and every known password (broker URL, transport options) is redacted from the rows.

Exit code (:func:`exit_code`): 0 only when everything the metrics need is in place — broker
reachable, at least one worker answering, worker events arriving with task events on. The other
rows (``task-sent`` events, result backend, history) are advice.

Events are read the way ``serve`` reads them: on the Redis fast path when ``serve`` would use it
(``rediss://`` with its TLS options included), else through kombu; a broker that kombu reaches
but the fast path does not fails the broker row.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from celery import Celery
from celery.app.utils import find_app
from kombu import Consumer

from exporter.config import Settings
from exporter.events.redis_stream import (
    RedisEventStream,
    accept_content,
    decode_payload,
    fanout_pattern,
    redis_params,
)
from exporter.logs import TLS_ADVICE, describe, tls_problem
from exporter.poll.inspect_replies import parse_active_queues
from exporter.secrets import Redactor, mask_url, mask_urls_in

log = logging.getLogger(__name__)

#: Seconds to listen for events.
DEFAULT_LISTEN_SECONDS = 5.0
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


# -- judging (pure) ------------------------------------------------------------------------

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


def judge_history(error: BaseException | None, checked: bool) -> CheckResult:
    """The history row from the writability probe's error (``None``: writable)."""
    if not checked:
        return CheckResult("history database", None, "not checked")
    if error is None:
        return CheckResult("history database", True, "writable")
    return CheckResult("history database", False,
                       f"not writable: {type(error).__name__}: {mask_urls_in(str(error))}",
                       "check --history-url and that the database exists and accepts writes "
                       "(celery-jobmon db upgrade)")


# -- gathering (I/O) -----------------------------------------------------------------------

def load_producer_conf(app_ref: str) -> tuple[Mapping[str, Any] | None, CheckResult | None]:
    """Import the user's Celery app (``module:attr`` or ``module``) and return its conf, or
    ``(None, row)`` explaining why it could not be imported.
    """
    try:
        app = find_app(app_ref)
    except Exception as exc:
        return None, CheckResult("producer app", False,
                                 f"cannot import {app_ref!r}: {type(exc).__name__}: {exc}",
                                 "pass --app module:attr of your Celery app, importable from "
                                 "the current directory")
    if not isinstance(app, Celery):
        return None, CheckResult("producer app", False, f"{app_ref!r} is not a Celery app",
                                 "pass --app module:attr naming a Celery instance")
    conf = app.conf
    return {key: conf.get(key) for key in
            ("task_send_sent_event", "result_backend", "result_extended")}, None


def fast_path_stream(app: Celery, settings: Settings) -> RedisEventStream | None:
    """The Redis fast-path stream ``serve`` would read events with (not connected yet), or
    ``None`` when ``serve`` would use kombu (``--no-redis-fast-path``, not Redis, options the
    fast path does not reproduce).
    """
    pattern = fanout_pattern(app.conf.broker_read_url, app.conf.broker_transport_options or {},
                             app.conf.event_exchange) if settings.redis_fast_path else None
    if pattern is None:
        return None
    with app.connection_for_read() as conn:
        return RedisEventStream(redis_params(conn), pattern)


def _count_types(seen: Counter[str], body: Any) -> None:
    for event in body if isinstance(body, list) else (body,):
        if isinstance(event, Mapping) and isinstance(event.get("type"), str):
            seen[event["type"]] += 1


def listen_fast_path(stream: RedisEventStream, seconds: float,
                     once_listening: Callable[[], None], accept: Iterable[str]
                     ) -> Counter[str]:
    """Read events from ``stream`` (subscribed here) for ``seconds`` and count event types,
    decoding as ``serve`` does (``accept``: serializer names or MIME types); undecodable
    payloads are not counted. ``once_listening`` runs once subscribed.

    Raises:
        redis.ConnectionError, redis.TimeoutError: connecting or reading failed.

    """
    seen: Counter[str] = Counter()
    accepted = accept_content(accept)
    deadline = time.monotonic() + seconds
    stream.connect()
    try:
        once_listening()
        while (remaining := deadline - time.monotonic()) > 0:
            for payload in stream.read_batch(timeout=min(0.5, remaining)):
                try:
                    _count_types(seen, decode_payload(payload, accepted))
                except Exception as exc:
                    log.debug("check skipped an undecodable event error=%s",
                              type(exc).__name__)
    finally:
        stream.close()
    return seen


def listen_for_events(app: Celery, seconds: float, once_listening: Callable[[], None]
                      ) -> Counter[str]:
    """Consume the event exchange through kombu for ``seconds`` and count event types.

    ``once_listening`` runs after the first drain (on Redis the pub/sub subscription only
    exists from then on), e.g. to broadcast ``enable_events`` and ``heartbeat``.
    """
    seen: Counter[str] = Counter()

    def on_message(body: Any, message: Any) -> None:
        _count_types(seen, body)

    with app.connection_for_read() as conn:
        receiver = app.events.Receiver(conn, handlers={})
        channel = conn.channel()
        consumer = Consumer(channel, queues=[receiver.queue], callbacks=[on_message],
                            no_ack=True, accept=set(app.conf.accept_content or ("json",)))
        deadline = time.monotonic() + seconds
        with consumer:
            first = True
            while (remaining := deadline - time.monotonic()) > 0:
                try:
                    conn.drain_events(timeout=min(0.25 if first else 0.5, remaining))
                except TimeoutError:
                    pass
                if first:
                    first = False
                    once_listening()
        channel.close()
    return seen


def _task_events_on(app: Celery, settings: Settings, hosts: Sequence[str]
                    ) -> dict[str, TaskEvents] | None:
    """Per worker: did it send task events? With ``--enable-events`` the check broadcasts
    ``enable_events`` as ``serve`` does, and the replies say what was true before.
    """
    if not hosts:
        return None
    timeout = settings.inspect_timeout
    if settings.enable_events:
        replies = app.control.broadcast("enable_events", reply=True, timeout=timeout,
                                        destination=list(hosts), limit=len(hosts)) or []
        return task_events_before(replies, hosts)
    confs = app.control.inspect(timeout=timeout, destination=list(hosts),
                                limit=len(hosts)).conf() or {}
    return {h: "on" if isinstance(confs.get(h), Mapping)
            and confs[h].get("worker_send_task_events") else None for h in hosts}


def run_checks(
    settings: Settings,
    *,
    app_ref: str | None = None,
    history_check: Callable[[], object] | None = None,
    listen_seconds: float = DEFAULT_LISTEN_SECONDS,
    app: Celery | None = None,
) -> list[CheckResult]:
    """Run every check against the broker in ``settings``; never raises for a failed check.

    Args:
        settings: the serve settings (broker URL, transport options, ``enable_events``,
            ``inspect_timeout``).
        app_ref: ``module:attr`` of the user's (producer) Celery app, to read
            ``task_send_sent_event``, ``result_backend`` and ``result_extended``.
        history_check: raises when the history database is not writable (``None``: skipped).
        listen_seconds: how long to listen for events.
        app: the exporter's Celery app (default: built from ``settings``).

    Returns:
        Rows: broker, workers, events, task-sent events, result backend, history database
        (and a ``producer app`` row when ``app_ref`` cannot be imported).

    """
    own_app = app is None
    if app is None:
        from exporter.app import make_celery_app

        app = make_celery_app(settings)
    try:
        results = _rows(app, settings, app_ref, history_check, listen_seconds)
    finally:
        if own_app:
            app.close()
    secrets = settings.secrets()
    return redact(results, secrets)


def _rows(app: Celery, settings: Settings, app_ref: str | None,
          history_check: Callable[[], object] | None, listen_seconds: float
          ) -> list[CheckResult]:
    producer_conf: Mapping[str, Any] | None = None
    results: list[CheckResult] = []
    if app_ref:
        producer_conf, problem = load_producer_conf(app_ref)
        if problem is not None:
            results.append(problem)
    stream = fast_path_stream(app, settings)
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=settings.inspect_timeout * 2)
        if stream is not None:  # the connection serve's event consumer opens
            stream.connect()
            stream.close()
    except Exception as exc:
        broker_error: BaseException | None = exc
    else:
        broker_error = None
    results.insert(0, judge_broker(settings.broker_url, broker_error))
    if broker_error is None:
        try:
            results[1:1] = _worker_rows(app, settings, listen_seconds, producer_conf, stream)
        except Exception as exc:  # the broker went away during the check
            lost = f"broker error during the check: {type(exc).__name__}: {mask_urls_in(str(exc))}"
            results[1:1] = [CheckResult("workers", None, lost),
                            CheckResult("events", None, lost)]
    else:
        skipped = "skipped: broker unreachable"
        results[1:1] = [
            CheckResult("workers", None, skipped),
            CheckResult("events", None, skipped),
            judge_task_sent({}, producer_conf, 0) if producer_conf is not None
            else CheckResult("task-sent events", None, skipped),
        ]
    results.append(judge_result_backend(producer_conf))
    history_error: BaseException | None = None
    if history_check is not None:
        try:
            history_check()
        except Exception as exc:
            history_error = exc
    results.append(judge_history(history_error, history_check is not None))
    return results


def _worker_rows(app: Celery, settings: Settings, seconds: float,
                 producer_conf: Mapping[str, Any] | None, stream: RedisEventStream | None
                 ) -> list[CheckResult]:
    timeout = settings.inspect_timeout
    ping = app.control.ping(timeout=timeout) or []
    hosts = sorted({h for reply in ping if isinstance(reply, Mapping) for h in reply})
    queues = (app.control.inspect(timeout=timeout, destination=hosts, limit=len(hosts))
              .active_queues() if hosts else None)
    task_events: dict[str, TaskEvents] | None = None

    def once_listening() -> None:
        nonlocal task_events
        task_events = _task_events_on(app, settings, hosts)
        app.control.broadcast("heartbeat")  # workers send a worker-heartbeat right away

    if stream is not None:
        seen = listen_fast_path(stream, seconds, once_listening, settings.accept_content)
    else:
        seen = listen_for_events(app, seconds, once_listening)
    log.debug("check events seen=%s", dict(seen))
    return [judge_workers(ping, queues), judge_events(seen, task_events, seconds),
            judge_task_sent(seen, producer_conf, seconds)]
