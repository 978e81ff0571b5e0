"""``celery-jobmon demo``: the whole product on a bare machine, in one process.

No broker, database or worker to install: the exporter (:func:`exporter.app.build_service`)
runs on kombu's in-memory transport (``memory://``, shared by every connection of one process),
beside an in-process Celery worker (Celery's own test helper,
:func:`celery.contrib.testing.worker.start_worker`, thread pool, heartbeats on) and a producer
thread that keeps sending the demo tasks below. History, results and the job browser's users
file live in a temporary directory, removed on exit; the action API and the job browser (``/ui/``,
one operator) are on, with a token and a password generated at start and printed once.

Why ``memory://``: it needs no server, and it carries everything the exporter uses — task
messages, the event exchange (``celeryev``), the workers' control replies (``inspect``) —
because every party lives in this process (measured: events of every task type, ``inspect``
answers and the SQLite history all fill within seconds). What the demo cannot show: queue
lengths (the poller reads them from Redis and RabbitMQ only) and a worker pool of processes
(threads here).

The demo tasks (names ``demo.*``) and what each shows:

==================  ==========================================================================
task                shows
==================  ==========================================================================
``demo.add``        successes, their run time
``demo.charge``     failures (``PaymentDeclined`` one time in four): the Failed list, retry
``demo.fetch``      retries (``ConnectionError`` twice, then success): ``task-retried``
``demo.report``     slow tasks (3-6 s): running, the slow flag
``demo.send``       priorities 0-9 and ETAs (``countdown``): waiting and scheduled tasks
==================  ==========================================================================

Every ``REVOKE_EVERY`` rounds (from the second) the producer schedules a ``demo.send`` one
minute ahead and revokes it: a cancelled waiting task.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from celery import Celery
from celery.contrib.testing.worker import start_worker

from exporter.config import Settings

log = logging.getLogger(__name__)

#: Seconds between two rounds of the producer.
ROUND_SECONDS = 1.0
#: Every this many rounds, a scheduled task is sent and revoked.
REVOKE_EVERY = 15
#: Threads of the in-process worker.
WORKER_CONCURRENCY = 4
#: The job browser's user in the demo (an operator; its password is made at start).
DEMO_USER = "demo"
#: The in-memory broker (a host named, so kombu does not warn that none was given).
BROKER_URL = "memory://localhost//"


class PaymentDeclined(Exception):
    """The failure ``demo.charge`` raises (its exception class in the Failed list)."""


def demo_app(broker_url: str, result_backend: str) -> Celery:
    """The demo's Celery app: the ``demo.*`` tasks (module docs), task events on (``task_send_
    sent_event`` too), results with ``result_extended`` in ``result_backend``.
    """
    app = Celery("demo", broker=broker_url, backend=result_backend, set_as_current=False)
    app.conf.update(worker_send_task_events=True, task_send_sent_event=True,
                    result_extended=True, task_track_started=True,
                    worker_hijack_root_logger=False)

    @app.task(name="demo.add")
    def add(x: int, y: int) -> int:
        time.sleep(random.uniform(0.05, 0.5))
        return x + y

    @app.task(name="demo.charge")
    def charge(order: int, amount_cents: int) -> str:
        time.sleep(random.uniform(0.1, 0.6))
        if order % 4 == 0:
            raise PaymentDeclined(f"card declined for order {order} ({amount_cents} cents)")
        return f"charged order {order}"

    @app.task(name="demo.fetch", bind=True, max_retries=3, default_retry_delay=1)
    def fetch(self: Any, url: str) -> int:
        if self.request.retries < 2:
            raise self.retry(exc=ConnectionError(f"connection reset by {url}"))
        return len(url)

    @app.task(name="demo.report")
    def report(day: str) -> str:
        time.sleep(random.uniform(3.0, 6.0))
        return f"report for {day}"

    @app.task(name="demo.send")
    def send(to: str) -> str:
        time.sleep(random.uniform(0.05, 0.2))
        return f"sent to {to}"

    return app


def produce(app: Celery, rounds: int) -> None:
    """Send round ``rounds``' demo tasks (module docs): a few successes, a charge that fails
    one time in four, a fetch that retries, now and then a slow report, prioritised and
    scheduled sends, and every :data:`REVOKE_EVERY` rounds (from the second) a scheduled
    send revoked.
    """
    for i in range(3):
        app.send_task("demo.add", (rounds, i))
    app.send_task("demo.charge", (rounds, 100 * rounds + 99))
    if rounds % 3 == 0:
        app.send_task("demo.fetch", (f"https://example.com/{rounds}",))
    if rounds % 5 == 0:
        app.send_task("demo.report", (f"2026-01-{rounds % 28 + 1:02d}",))
    app.send_task("demo.send", (f"user{rounds}@example.com",), priority=rounds % 10)
    if rounds % 4 == 0:
        app.send_task("demo.send", (f"later{rounds}@example.com",), countdown=20)
    if rounds % REVOKE_EVERY == 2:
        doomed = app.send_task("demo.send", (f"never{rounds}@example.com",), countdown=60)
        app.control.revoke(doomed.id)


class Producer(threading.Thread):
    """Calls :func:`produce` every :data:`ROUND_SECONDS` until :meth:`stop`."""

    def __init__(self, app: Celery) -> None:
        super().__init__(name="demo-producer", daemon=True)
        self.app = app
        self._stopping = threading.Event()

    def run(self) -> None:
        """Produce until stopped; a round that raises is logged and the next one follows."""
        rounds = 1
        while not self._stopping.wait(ROUND_SECONDS):
            try:
                produce(self.app, rounds)
            except Exception:  # the demo goes on; the log says why a round was lost
                log.exception("demo producer round failed round=%d", rounds)
            rounds += 1

    def stop(self) -> None:
        """Stop after the round in progress."""
        self._stopping.set()
        self.join(timeout=5)


def demo_settings(directory: Path, listen: tuple[str, int], log_level: str,
                  password: str) -> Settings:
    """Exporter settings for the demo: ``memory://`` broker, SQLite history and result
    backend in ``directory``, the action API on with a fresh token, the job browser on with
    one operator, :data:`DEMO_USER` with ``password`` (a users file written in ``directory``),
    a 2 s inspect interval.
    """
    from ui.users import OPERATOR, add_user

    users = directory / "ui-users"
    add_user(str(users), DEMO_USER, OPERATOR, password)
    return Settings(
        broker_url=BROKER_URL, listen=listen, log_level=log_level,
        history_url=f"sqlite:///{directory / 'history.sqlite'}",
        result_backend=f"db+sqlite:///{directory / 'results.sqlite'}",
        api_token=secrets.token_urlsafe(24), inspect_interval=2.0,
        ui_users_file=str(users),
    ).validate()


@contextmanager
def demo_directory() -> Iterator[Path]:
    """A temporary directory for the demo's databases, removed on exit whatever happens."""
    directory = Path(tempfile.mkdtemp(prefix="celery-jobmon-demo-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def run_demo(listen: tuple[str, int], log_level: str,
             announce: Callable[[str], None] = print) -> None:
    """Run the demo until SIGINT/SIGTERM (module docs); ``announce`` receives the banner (the
    addresses, the UI password and the API token, shown once; the log masks the token).
    Everything stops and the temporary directory is removed on the way out.
    """
    from exporter.app import build_service
    from exporter.http import make_server, serve_all
    from exporter.logs import configure_logging

    with demo_directory() as directory:
        password = secrets.token_urlsafe(12)
        settings = demo_settings(directory, listen, log_level, password)
        configure_logging(log_level, "text", settings.secrets())
        if log_level != "DEBUG":
            # The demo's failures are on purpose: they show in /metrics and the history, not
            # as a traceback in the terminal every few seconds.
            logging.getLogger("celery.app.trace").setLevel(logging.CRITICAL)
        service = build_service(settings)
        app = demo_app(settings.broker_url, settings.result_backend or "")
        host, port = listen
        base = f"http://{host}:{port}"
        announce(
            "celery-jobmon demo: an in-memory broker, one worker (4 threads) and a producer,\n"
            f"  pages     {base}/ui/   user {DEMO_USER}, password {password}\n"
            f"  metrics   {base}/metrics\n"
            f"  API       {base}/api/v1/tasks?state=FAILURE\n"
            f"  API token {settings.api_token}   (curl -H 'Authorization: Bearer …')\n"
            "The password and the token are shown once. Ctrl-C stops the demo and removes its "
            "temporary files.")
        service.start()
        try:
            with start_worker(app, pool="threads", concurrency=WORKER_CONCURRENCY,
                              perform_ping_check=False, loglevel="WARNING",
                              hostname=f"demo@{socket.gethostname()}",
                              without_heartbeat=False, shutdown_timeout=10.0):
                producer = Producer(app)
                producer.start()
                try:
                    asyncio.run(serve_all([make_server(service.http, listen, settings)]))
                finally:
                    producer.stop()
        finally:
            service.stop()
            app.close()
