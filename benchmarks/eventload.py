"""Event load for benchmarks: render Celery events once through the real dispatcher, replay fast.

Sending through Celery's ``EventDispatcher`` costs ~0.5 ms of CPU per event here, slower than a
good consumer, so it would measure the generator. Instead a template of task lifecycles is
published once through the real dispatcher to a private Redis; the exact bytes kombu published
are captured from pub/sub and later replayed with pipelined ``PUBLISH`` (tens of thousands of
events per second). Replayed events keep their render-time timestamps.

For RabbitMQ (:class:`RabbitVhost`, :func:`publish_amqp`) the same captured messages are
unwrapped (JSON body, routing key such as ``task.succeeded``, ``hostname`` header) and
published as they are (no re-serialization) to the ``celeryev`` topic exchange of a private
vhost with pika (paced to ``rate`` messages/s when given).
"""

from __future__ import annotations

import base64
import json
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import pika
import redis
from celery import Celery

LIFECYCLE_OK = ("task-sent", "task-received", "task-started", "task-succeeded")
LIFECYCLE_FAIL = ("task-sent", "task-received", "task-started", "task-failed")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A private ``redis-server`` on a free port (pub/sub output limit lifted if asked)."""

    def __init__(self, lift_pubsub_limit: bool = True) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="jobmon-bench-redis-")
        args = [shutil.which("redis-server") or "redis-server", "--port", str(self.port),
                "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", self.dir]
        if lift_pubsub_limit:
            args += ["--client-output-buffer-limit", "pubsub 0 0 0"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=self.port).ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Template:
    """Captured messages: ``(channel suffix after the db prefix, payload bytes)`` in order, and
    the events they carry by type and by (type, name, queue)."""

    messages: list[tuple[str, bytes]]
    by_type: dict[str, int]
    tasks: int


def render(server: RedisServer, tasks: int = 2000, names: int = 20, queues: int = 4,
           workers: int = 4, failure_ratio: float = 0.05, seed: int = 1) -> Template:
    """Publish ``tasks`` lifecycles through Celery's EventDispatcher and capture the bytes."""
    rng = random.Random(seed)
    client = redis.Redis(port=server.port)
    pubsub = client.pubsub()
    pubsub.psubscribe("/15.celeryev*")
    while pubsub.get_message(timeout=1) is None:
        pass
    captured: list[tuple[str, bytes]] = []
    done = threading.Event()

    def collect() -> None:
        while True:
            message = pubsub.get_message(timeout=0.5)
            if message is None:
                if done.is_set():
                    return
                continue
            if message["type"] == "pmessage":
                channel = message["channel"].decode()
                captured.append((channel.partition(".")[2], message["data"]))

    thread = threading.Thread(target=collect)
    thread.start()
    app = Celery("bench", broker=server.url(15), set_as_current=False)
    by_type: dict[str, int] = {}
    with app.connection_for_write() as conn:
        dispatchers = [app.events.Dispatcher(conn, hostname=f"w{i}@bench", enabled=True)
                       for i in range(workers)]
        producer = app.events.Dispatcher(conn, hostname="producer@bench", enabled=True)
        for _ in range(tasks):
            task_id = str(uuid.uuid4())
            name = f"bench.tasks.t{rng.randrange(names)}"
            queue = f"q{rng.randrange(queues)}"
            worker = rng.choice(dispatchers)
            failed = rng.random() < failure_ratio
            for event_type in LIFECYCLE_FAIL if failed else LIFECYCLE_OK:
                fields: dict = {"uuid": task_id}
                # The fields Celery 5 sends: a top-level task is its own root.
                if event_type == "task-sent":
                    fields.update(root_id=task_id, parent_id=None, name=name, args="(1, 2)",
                                  kwargs="{}", retries=0, eta=None, expires=None, queue=queue,
                                  exchange=queue, routing_key=queue)
                    producer.send(event_type, **fields)
                else:
                    if event_type == "task-received":
                        fields.update(name=name, args="(1, 2)", kwargs="{}", root_id=task_id,
                                      parent_id=None, retries=0, eta=None, expires=None)
                    elif event_type == "task-succeeded":
                        fields.update(result="3", runtime=0.01)
                    elif event_type == "task-failed":
                        fields.update(exception="ValueError('boom')",
                                      traceback="Traceback ...\nValueError: boom\n")
                    worker.send(event_type, **fields)
                by_type[event_type] = by_type.get(event_type, 0) + 1
    expected = sum(by_type.values())
    deadline = time.monotonic() + 30
    while len(captured) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    done.set()
    thread.join()
    pubsub.close()
    if len(captured) != expected:
        raise RuntimeError(f"captured {len(captured)} of {expected} rendered events")
    return Template(captured, by_type, tasks)


def pattern_subscribers(server: RedisServer) -> int:
    """Clients with a PSUBSCRIBE on the server (Celery's receiver subscribes lazily: wait for
    this to grow before publishing to it)."""
    clients = redis.Redis(port=server.port).client_list()
    return sum(1 for c in clients if int(c.get("psub", 0)))


def wait_subscribed(server: RedisServer, before: int, timeout: float = 30.0) -> None:
    """Block until more than ``before`` clients hold a pattern subscription."""
    deadline = time.monotonic() + timeout
    while pattern_subscribers(server) <= before:
        if time.monotonic() > deadline:
            raise RuntimeError("the consumer did not subscribe")
        time.sleep(0.05)


def with_new_ids(template: Template, copy: int) -> list[tuple[str, bytes]]:
    """The template's messages with every task id made unique to ``copy`` (so replays are new
    tasks, not repeats of the same ones: the history then writes one row per task)."""
    out = []
    for channel, data in template.messages:
        envelope = json.loads(data)
        body = base64.b64decode(envelope["body"])
        event = json.loads(body)
        for item in event if isinstance(event, list) else [event]:
            for key in ("uuid", "root_id"):
                if key in item:
                    item[key] = f"{item[key][:-6]}{copy:06d}"
        envelope["body"] = base64.b64encode(json.dumps(event).encode()).decode()
        out.append((channel, json.dumps(envelope).encode()))
    return out


def prepare(template: Template, copies: int, unique_ids: bool = True
            ) -> list[list[tuple[str, bytes]]]:
    """The messages of ``copies`` replays, each with fresh task ids unless ``unique_ids`` is
    off (the exporter counts a repeated event as a duplicate, not again)."""
    return [with_new_ids(template, k) if unique_ids else template.messages
            for k in range(copies)]


def replay(server: RedisServer, db: int, template: Template, copies: int,
           rate: float | None = None, unique_ids: bool = True) -> float:
    """Publish ``copies`` times the template to ``db`` (fresh task ids per copy unless
    ``unique_ids`` is off); at most ``rate`` events/s if given. Returns the seconds
    publishing took (not counting the preparation)."""
    return replay_batches(server, db, prepare(template, copies, unique_ids), rate)


def replay_batches(server: RedisServer, db: int, batches: list[list[tuple[str, bytes]]],
                   rate: float | None = None, pipeline_size: int = 500) -> float:
    """Publish the prepared ``batches`` (see :func:`prepare`) to ``db``; at most ``rate``
    events/s if given. Returns the seconds publishing took.
    """
    client = redis.Redis(port=server.port)
    prefix = f"/{db}."
    started = time.perf_counter()
    sent = 0
    pipe = client.pipeline(transaction=False)
    for messages in batches:
        for suffix, data in messages:
            channel = prefix + suffix
            pipe.publish(channel, data)
            sent += 1
            if sent % pipeline_size == 0:
                pipe.execute()
                if rate:
                    ahead = sent / rate - (time.perf_counter() - started)
                    if ahead > 0:
                        time.sleep(ahead)
    pipe.execute()
    return time.perf_counter() - started


class RabbitVhost:
    """A private vhost on the local RabbitMQ (``rabbitmqctl add_vhost`` + ``set_permissions``
    for ``user``), deleted with everything in it by :meth:`delete`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 5672, user: str = "guest",
                 password: str = "guest") -> None:
        self.name = f"jobmon-bench-{uuid.uuid4().hex[:12]}"
        self.host, self.port, self.user, self.password = host, port, user, password
        self._ctl("add_vhost", self.name)
        self._ctl("set_permissions", "-p", self.name, user, ".*", ".*", ".*")

    @staticmethod
    def _ctl(*args: str) -> str:
        return subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True,
                              text=True).stdout

    def url(self) -> str:
        return f"amqp://{self.user}:{self.password}@{self.host}:{self.port}/{self.name}"

    def queues(self) -> dict[str, tuple[int, int]]:
        """``{queue name: (ready messages, consumers)}`` in the vhost."""
        out = self._ctl("list_queues", "-p", self.name, "--no-table-headers",
                        "name", "messages_ready", "consumers")
        found = {}
        for line in out.splitlines():
            parts = line.split("\t")
            if len(parts) == 3 and parts[1].isdigit():
                found[parts[0]] = (int(parts[1]), int(parts[2]))
        return found

    def wait_event_queue(self, prefix: str = "celeryev.", timeout: float = 30.0) -> str:
        """Block until exactly one event queue (``prefix``…) exists and has a consumer (the
        consumer declares it when it connects; a previous consumer's auto-delete queue must be
        gone, or it would get copies of the burst). Returns its name."""
        deadline = time.monotonic() + timeout
        while True:
            queues = {name: v for name, v in self.queues().items() if name.startswith(prefix)}
            if len(queues) == 1:
                name, (_, consumers) = next(iter(queues.items()))
                if consumers:
                    return name
            if time.monotonic() > deadline:
                raise RuntimeError(f"no single consumed event queue in {self.name}: {queues}")
            time.sleep(0.2)

    def delete(self) -> None:
        self._ctl("delete_vhost", self.name)


def amqp_messages(batches: list[list[tuple[str, bytes]]]
                  ) -> list[tuple[str, bytes, dict[str, Any]]]:
    """The prepared Redis ``batches`` (see :func:`prepare`) as AMQP messages:
    ``(routing key, JSON body bytes, headers)``, in order."""
    out = []
    for messages in batches:
        for _channel, data in messages:
            envelope = json.loads(data)
            routing_key = envelope["properties"]["delivery_info"]["routing_key"]
            out.append((routing_key, base64.b64decode(envelope["body"]), envelope["headers"]))
    return out


def publish_amqp(url: str, messages: list[tuple[str, bytes, dict[str, Any]]],
                 rate: float | None = None, pace_every: int = 500) -> float:
    """Publish ``messages`` (see :func:`amqp_messages`) to the event exchange (``celeryev``,
    declared by the consumers) at ``url``, bodies as they are (``application/json``,
    transient, like Celery's dispatcher), with pika (a kombu ``Producer`` published about 6,000
    messages/s here: the generator must not be what limits a sustained rate); at most
    ``rate`` messages/s if given (checked every ``pace_every`` messages). Returns once the
    broker has routed them all (a synchronous call on the same channel answers after every
    publish before it): the seconds that took."""
    parts = urlsplit(url)
    params = pika.ConnectionParameters(
        host=parts.hostname or "127.0.0.1", port=parts.port or 5672,
        virtual_host=unquote(parts.path[1:]) or "/",
        credentials=pika.PlainCredentials(unquote(parts.username or "guest"),
                                          unquote(parts.password or "guest")))
    started = time.perf_counter()
    connection = pika.BlockingConnection(params)
    try:
        channel = connection.channel()
        publish = channel.basic_publish
        for sent, (routing_key, body, headers) in enumerate(messages, 1):
            publish("celeryev", routing_key, body, pika.BasicProperties(
                content_type="application/json", content_encoding="utf-8", headers=headers,
                delivery_mode=1))
            if rate and sent % pace_every == 0:
                ahead = sent / rate - (time.perf_counter() - started)
                if ahead > 0:
                    time.sleep(ahead)
        channel.exchange_declare("celeryev", passive=True)  # synchronous: all routed
    finally:
        connection.close()
    return time.perf_counter() - started
