"""Fixtures for tests against real brokers, real Celery workers and a real exporter process.

Services: Redis 127.0.0.1:6379 and RabbitMQ 127.0.0.1:5672 (guest/guest), started by the
machine or by `.ci/run`. A missing service fails the test (never a skip). Each test gets its own
Redis database or RabbitMQ vhost, so tests cannot see each other's queues and events.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis
from celery import Celery
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql

from exporter.history import create_history_engine, upgrade
from exporter.history.orm import ACTION_AUDIT, TASK_EXECUTION

ROOT = Path(__file__).resolve().parents[2]
REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
AMQP_HOST = "127.0.0.1:5672"
#: Redis databases this suite uses (others are left to other tests and to the user).
_REDIS_DBS = itertools.cycle(range(1, 9))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2,
             what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
        except Exception as exc:  # a service still starting
            last_error = exc
        else:
            if result:
                return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: "
                         f"{last_error!r})")


class Metrics:
    """Parsed `/metrics` text: ``value(sample_name, **labels)`` → float or ``None``."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[str, dict[frozenset[tuple[str, str]], float]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = frozenset(sample.labels.items())
                self.samples.setdefault(sample.name, {})[key] = sample.value

    def value(self, metric: str, /, **labels: str) -> float | None:
        return self.samples.get(metric, {}).get(frozenset(labels.items()))

    def series(self, metric: str) -> list[dict[str, str]]:
        return [dict(key) for key in self.samples.get(metric, {})]


def _log_file(prefix: str) -> Any:
    return tempfile.NamedTemporaryFile(prefix=prefix, suffix=".log", delete=False, mode="w+")


class Exporter:
    """A `celery-jobmon serve` subprocess on a free port, with a history database of its own
    (a fresh SQLite file unless ``history_url`` is given)."""

    def __init__(self, broker_url: str, *extra: str, history_url: str | None = None) -> None:
        self.port = free_port()
        self.log = _log_file("exporter-")
        if history_url is None:
            history_url = f"sqlite:///{tempfile.mkdtemp(prefix='jobmon-history-')}/history.db"
        self.history_url = history_url
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", "serve", "--broker-url", broker_url,
             "--listen", f"127.0.0.1:{self.port}", "--inspect-interval", "1s",
             "--log-level", "debug", "--history-url", history_url, *extra],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT,
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=5)

    def metrics(self) -> Metrics:
        response = self.get("/metrics")
        response.raise_for_status()
        return Metrics(response.text)

    def wait_ready(self, timeout: float = 30) -> None:
        wait_for(lambda: self.proc.poll() is None and self.get("/readyz").status_code == 200,
                 timeout, what=f"exporter ready\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Worker:
    """A real `celery worker` subprocess running examples/tasks.py with events on (-E)."""

    def __init__(self, broker_url: str, queues: str = "a,b", name: str | None = None) -> None:
        self.hostname = name or f"w{uuid.uuid4().hex[:6]}@jobmon-test"
        self.log = _log_file("worker-")
        env = {**os.environ, "CELERY_BROKER_URL": broker_url}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "examples.tasks", "worker", "-E",
             "-Q", queues, "-c", "2", "-P", "prefork", "--without-gossip", "--without-mingle",
             "-n", self.hostname, "--loglevel", "INFO"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
            start_new_session=True,  # its own process group: the pool dies with it
        )

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()

    def kill(self) -> None:
        """SIGKILL the worker and its pool: no worker-offline, no terminal task events."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A broker URL on an emptied Redis database of its own."""
    db = next(_REDIS_DBS)
    client = redis.Redis(REDIS_HOST, REDIS_PORT, db=db)
    client.flushdb()
    yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"
    client.flushdb()


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def amqp_url() -> Iterator[str]:
    """A broker URL on a RabbitMQ vhost of its own (deleted afterwards)."""
    vhost = f"jobmon-test-{uuid.uuid4().hex[:8]}"
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    yield f"amqp://guest:guest@{AMQP_HOST}/{vhost}"
    _rabbitmqctl("delete_vhost", vhost)


@pytest.fixture(params=["redis", "amqp"])
def broker_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs once on Redis and once on RabbitMQ."""
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
def producer() -> Callable[[str], Celery]:
    """Build a producer Celery app for a broker URL that sends `task-sent` events."""
    apps: list[Celery] = []

    def make(url: str) -> Celery:
        app = Celery(f"producer-{uuid.uuid4().hex[:6]}", broker=url, set_as_current=False)
        app.conf.update(task_send_sent_event=True, broker_connection_retry_on_startup=True)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


@pytest.fixture
def start_exporter() -> Iterator[Callable[..., Exporter]]:
    started: list[Exporter] = []

    def start(broker_url: str, *extra: str, history_url: str | None = None) -> Exporter:
        exporter = Exporter(broker_url, *extra, history_url=history_url)
        started.append(exporter)
        exporter.wait_ready()
        return exporter

    yield start
    for exporter in started:
        exporter.stop()


@pytest.fixture
def start_worker() -> Iterator[Callable[..., Worker]]:
    started: list[Worker] = []

    def start(broker_url: str, queues: str = "a,b") -> Worker:
        worker = Worker(broker_url, queues)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()  # teardown: nothing to drain, and a warm shutdown waits for its tasks


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Any]:
    """A private `redis-server` on a free port: ``.url``, ``.start()``, ``.kill()``."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed (apt-get install -y redis-server)"
    port = free_port()

    class Server:
        url = f"redis://127.0.0.1:{port}/0"
        proc: subprocess.Popen[bytes] | None = None

        def start(self) -> None:
            self.proc = subprocess.Popen(
                [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(tmp_path)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            wait_for(lambda: redis.Redis(port=port).ping(), 10, what="private redis-server")

        def kill(self) -> None:
            if self.proc and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()

    server = Server()
    server.start()
    yield server
    server.kill()


# -- PostgreSQL -------------------------------------------------------------------------

PG_HOST, PG_PORT = "127.0.0.1", 5432


def _admin() -> psycopg.Connection:
    return psycopg.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname="postgres",
                           autocommit=True, connect_timeout=10)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this session (dropped afterwards)."""
    name = f"jobmon_history_{uuid.uuid4().hex[:12]}"
    with _admin() as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} ENCODING 'UTF8' TEMPLATE template0").format(
            sql.Identifier(name)))
    url = f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        with _admin() as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


class TcpProxy:
    """Forwards a free local port to ``upstream`` (PostgreSQL by default) while started;
    ``close()`` cuts every connection and refuses new ones until ``start()`` again."""

    def __init__(self, upstream: tuple[str, int] = (PG_HOST, PG_PORT)) -> None:
        self.upstream = upstream
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self._server: socket.socket | None = None
        self._sockets: list[socket.socket] = []

    def start(self) -> None:
        self._server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        assert self._server is not None
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            self._sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        for sock in [*self._sockets, *([self._server] if self._server else [])]:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self._sockets.clear()
        self._server = None


@pytest.fixture(params=["sqlite", "postgresql"])
def history_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty history database: a SQLite file, then the session's PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'history.sqlite3'}"
    url = str(request.getfixturevalue("pg_url"))
    engine = create_history_engine(url)
    with engine.begin() as connection:
        connection.execute(TASK_EXECUTION.delete())
        connection.execute(ACTION_AUDIT.delete())
    engine.dispose()
    return url
