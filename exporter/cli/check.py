"""``celery-jobmon check``: tell a new user what is missing for the metrics, and how to fix it.

:func:`run_checks` gathers the facts (broker connection, ``ping``, ``inspect active_queues``,
``enable_events`` replies, a few seconds of events, the producer app's configuration, the
history database) and the pure ``judge_*`` functions of :mod:`exporter.cli.check_rows` turn
them into :class:`~exporter.cli.check_rows.CheckResult` rows. Secrets never appear: URLs go
through :func:`exporter.secrets.mask_url`, URLs inside error texts are masked, and every known
password (broker URL, transport options) is redacted from the rows.

Exit code (:func:`~exporter.cli.check_rows.exit_code`): 0 only when everything the metrics need
is in place — broker reachable, at least one worker answering, worker events arriving with task
events on. The other rows (``task-sent`` events, result backend, history) are advice.

Events are read the way ``serve`` reads them: on the Redis fast path when ``serve`` would use it
(``rediss://`` with its TLS options included), else through kombu; a broker that kombu reaches
but the fast path does not fails the broker row.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from celery import Celery
from celery.app.utils import find_app
from kombu import Consumer

from exporter.cli.check_rows import (
    CheckResult,
    TaskEvents,
    judge_broker,
    judge_events,
    judge_history,
    judge_result_backend,
    judge_task_sent,
    judge_workers,
    redact,
    task_events_before,
)
from exporter.config import Settings
from exporter.events.redis_stream import (
    RedisEventStream,
    accept_content,
    decode_payload,
    fanout_pattern,
    redis_params,
)
from exporter.secrets import mask_urls_in

log = logging.getLogger(__name__)

#: Seconds to listen for events.
DEFAULT_LISTEN_SECONDS = 5.0


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


def history_probe(settings: Settings) -> Callable[[], str]:
    """The writability probe (:func:`exporter.history.db.probe_writable`) of the history
    database ``serve`` would use (``--history-url``, else the default SQLite file, whose
    directory is created as ``serve`` does), to call later.
    """
    def probe() -> str:
        from exporter.history.db import probe_writable
        from exporter.history.setup import history_url

        return probe_writable(history_url(settings))
    return probe


def run_checks(
    settings: Settings,
    *,
    app_ref: str | None = None,
    history_check: Callable[[], str] | None = None,
    listen_seconds: float = DEFAULT_LISTEN_SECONDS,
    app: Celery | None = None,
) -> list[CheckResult]:
    """Run every check against the broker in ``settings``; never raises for a failed check.

    Args:
        settings: the serve settings (broker URL, transport options, ``enable_events``,
            ``inspect_timeout``).
        app_ref: ``module:attr`` of the user's (producer) Celery app, to read
            ``task_send_sent_event``, ``result_backend`` and ``result_extended``.
        history_check: raises when the history database is not writable, else returns a note
            on its schema (:func:`history_probe`; ``None``: skipped, ``--no-history``).
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
          history_check: Callable[[], str] | None, listen_seconds: float
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
    note = ""
    if history_check is not None:
        try:
            note = history_check()
        except Exception as exc:
            history_error = exc
    results.append(judge_history(history_error, history_check is not None, note))
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
