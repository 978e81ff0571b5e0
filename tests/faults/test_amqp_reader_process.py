"""The RabbitMQ fast path's reader process (``--amqp-reader process``, the default): a child
that dies is a lost connection the consumer can replace, errors it meets reach the exporter as
they are, and it never outlives the exporter's end of the socket (nor keeps its connection and
the exclusive event queue).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pika
import pika.exceptions
import pytest
from celery import Celery
from celery.events.event import Event, get_exchange
from kombu import Producer

from exporter.events.amqp_reader import AmqpReaderProcess
from exporter.events.amqp_stream import (
    STREAM_ERRORS,
    AmqpEventStream,
    amqp_parameters,
    event_queue,
)
from tests.support.exporter import Exporter, child_pids
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _app(url: str) -> Celery:
    return Celery("reader", broker=url, set_as_current=False)


def _params(app: Celery) -> pika.ConnectionParameters:
    with app.connection_for_read() as conn:
        params = amqp_parameters(conn, app.conf.broker_read_url, {})
    assert params is not None
    return params


def _publish(app: Celery, task_id: str) -> None:
    with app.connection_for_write() as conn:
        Producer(conn.default_channel, exchange=get_exchange(conn)).publish(
            Event("task-sent", uuid=task_id, name="billing.charge", hostname="p@h"),
            routing_key="task.sent")


def _read(stream: AmqpReaderProcess, count: int) -> list:
    got: list = []
    wait_for(lambda: got.extend(stream.read_batch(timeout=0.2)) or len(got) >= count, 10,
             message=lambda: f"{len(got)} of {count} messages")
    return got


def _rabbitmqctl(*args: str) -> list[str]:
    out = subprocess.run(["rabbitmqctl", "-q", *args, "--no-table-headers"], check=True,
                         capture_output=True, text=True, timeout=60).stdout
    return [line for line in out.splitlines() if line.strip()]


def _vhost(url: str) -> str:
    return url.rsplit("/", 1)[1]


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended but not reaped by its parent, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_killed_reader_is_a_lost_connection_and_a_new_one_consumes(amqp_url):
    app = _app(amqp_url)
    stream = AmqpReaderProcess(_params(app), event_queue(app, node_id="n1"))
    stream.connect()
    try:
        first = str(uuid.uuid4())
        _publish(app, first)
        [(body, content_type, encoding, compression)] = _read(stream, 1)
        assert first.encode() in body
        assert (content_type, encoding, compression) == ("application/json", "utf-8", None)
        pid = stream.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(pika.exceptions.StreamLostError,
                           match="the AMQP reader process exited code=-9"):
            stream.read_batch(timeout=10)
        assert stream.pid is None
        # The killed child's connection is gone with it: the exclusive queue can be
        # declared again at once.
        stream.connect()
        assert stream.pid != pid
        second = str(uuid.uuid4())
        _publish(app, second)
        [(body, _, _, _)] = _read(stream, 1)
        assert second.encode() in body
        assert _rabbitmqctl("list_queues", "-p", _vhost(amqp_url), "name", "consumers") == \
            ["celeryev.n1\t1"]
    finally:
        stream.close()


def test_close_ends_the_child_and_its_connection(amqp_url):
    app = _app(amqp_url)
    stream = AmqpReaderProcess(_params(app), event_queue(app))
    stream.connect()
    pid = stream.pid
    assert pid is not None and _alive(pid)
    assert _vhost(amqp_url) in _rabbitmqctl("list_connections", "vhost")
    stream.close()
    assert not _alive(pid)
    wait_for(lambda: _vhost(amqp_url) not in _rabbitmqctl("list_connections", "vhost"), 10,
             message="the child's connection closed")
    assert _rabbitmqctl("list_queues", "-p", _vhost(amqp_url), "name") == []
    stream.close()  # idempotent
    with pytest.raises(pika.exceptions.ConnectionWrongStateError):
        stream.read_batch(timeout=0)


PARENT = """
import sys
from celery import Celery
from exporter.events.amqp_reader import AmqpReaderProcess
from exporter.events.amqp_stream import amqp_parameters, event_queue
app = Celery(broker=sys.argv[1])
with app.connection_for_read() as conn:
    params = amqp_parameters(conn, sys.argv[1], {})
stream = AmqpReaderProcess(params, event_queue(app))
stream.connect()
print(stream.pid, flush=True)
sys.stdin.read()
"""


def test_the_child_exits_when_the_exporter_is_killed(amqp_url):
    parent = subprocess.Popen([sys.executable, "-c", PARENT, amqp_url], cwd=ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        assert _alive(pid)
        parent.kill()
        parent.wait()
        # Orphaned, the child is reaped by init once it exits.
        wait_for(lambda: not _alive(pid), 5, message="the orphaned child exited")
        wait_for(lambda: _vhost(amqp_url) not in _rabbitmqctl("list_connections", "vhost"),
                 10, message="its connection closed")
    finally:
        parent.kill()
        parent.wait()


def test_an_error_the_child_meets_reaches_the_exporter_as_it_is(amqp_url):
    app = _app(amqp_url)
    queue = event_queue(app, node_id="n1")
    # Another connection holds the exclusive queue: RabbitMQ refuses the declaration.
    holder = pika.BlockingConnection(_params(app))
    try:
        holder.channel().queue_declare("celeryev.n1", exclusive=True, auto_delete=True)
        stream = AmqpReaderProcess(_params(app), queue)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as raised:
            stream.connect()
        assert raised.value.reply_code == 405  # RESOURCE_LOCKED
        assert "celeryev.n1" in raised.value.reply_text
        assert stream.pid is None
    finally:
        holder.close()


def test_a_broker_that_refuses_connections_is_a_connection_error(amqp_url):
    app = _app(amqp_url)
    params = _params(app)
    params.port = 1  # nothing listens there
    stream = AmqpReaderProcess(params, event_queue(app))
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        stream.connect()
    assert stream.pid is None


def _readers(pid: int) -> list[int]:
    """The process ids of ``serve``'s (``pid``) AMQP reader processes."""
    return child_pids(pid, b"amqp_reader")


def _reader_of(pid: int) -> int:
    """The process id of ``serve``'s (``pid``) one AMQP reader process."""
    [reader] = _readers(pid)
    return reader


def test_serve_counts_a_killed_reader_as_one_gap_and_counts_on_with_a_new_one(
        amqp_url, producer, start_exporter):
    exporter = start_exporter(amqp_url, "--no-history")
    app = producer(amqp_url)

    def sent() -> float | None:
        return exporter.metrics().value("celery_task_sent_total", name="examples.tasks.add",
                                        queue_name="a")

    app.send_task("examples.tasks.add", (1, 1), queue="a")
    wait_for(lambda: sent() == 1, 30, message="one task-sent counted")
    reader = _reader_of(exporter.proc.pid)
    os.kill(reader, signal.SIGKILL)
    wait_for(lambda: exporter.metrics().value("celery_jobmon_broker_reconnects_total") == 1,
             30, message=lambda: f"reconnect\n{exporter.output()[-3000:]}")
    assert _reader_of(exporter.proc.pid) != reader
    app.send_task("examples.tasks.add", (2, 2), queue="a")
    wait_for(lambda: sent() == 2, 30, message="counting resumed")
    metrics = exporter.metrics()
    assert metrics.value("celery_jobmon_event_gaps_total") == 1
    assert metrics.value("celery_jobmon_broker_connected") == 1
    assert "broker connection lost error=StreamLostError" in exporter.output()


@pytest.fixture
def silent_port():
    """A port that accepts TCP connections (the kernel's backlog) and never says a word."""
    listener = socket.create_server(("127.0.0.1", 0))
    yield listener.getsockname()[1]
    listener.close()


@pytest.mark.parametrize("stream_class", [AmqpEventStream, AmqpReaderProcess])
def test_a_broker_that_never_answers_the_handshake_is_a_connection_error(
        amqp_url, silent_port, stream_class):
    app = _app(amqp_url)
    params = _params(app)
    params.port = silent_port
    params.stack_timeout = 1.0  # pika's default: 15 s
    stream = stream_class(params, event_queue(app))
    with pytest.raises(STREAM_ERRORS) as raised:
        stream.connect()
    assert "handshake" in str(raised.value).lower()


def test_serve_stopped_leaves_no_reader_behind(amqp_url, silent_port, start_exporter):
    # A reader stopped (SIGSTOP: it cannot close its connection) when serve gets SIGTERM.
    exporter = start_exporter(amqp_url, "--no-history")
    reader = _reader_of(exporter.proc.pid)
    os.kill(reader, signal.SIGSTOP)
    exporter.proc.terminate()
    assert exporter.proc.wait(15) == 0
    assert not _alive(reader)
    # A reader still waiting for a broker that never answers (pika gives up after 15 s).
    silent = amqp_url.replace("127.0.0.1:5672", f"127.0.0.1:{silent_port}")
    waiting = Exporter(silent, "--no-history")
    try:
        wait_for(lambda: _readers(waiting.proc.pid), 30, message="a reader started")
        # Serving (its SIGTERM handler installed), not ready: the broker never answers.
        wait_for(lambda: waiting.get("/healthz").status_code == 200, 30, message="serving")
        assert waiting.get("/readyz").status_code == 503
        reader = _reader_of(waiting.proc.pid)
        waiting.proc.terminate()
        assert waiting.proc.wait(15) == 0
        assert not _alive(reader)
    finally:
        waiting.stop()
