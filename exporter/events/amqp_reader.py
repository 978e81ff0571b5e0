"""The RabbitMQ fast path with pika in a child process: the frames parsed off the event
thread's GIL.

pika parses every frame in Python: about two thirds of the event thread's CPU on RabbitMQ
(benchmarks/README.md, "What limits target 1"). :class:`AmqpReaderProcess` runs an
:class:`~exporter.events.amqp_stream.AmqpEventStream` in a process of its own, started with
``python -c`` (:func:`main`), which sends every batch it reads — the messages' bodies and the
three properties decoding needs — pickled through a socket (:mod:`multiprocessing.connection`'s
framing). The exporter's event thread only unpickles, decodes and applies them.

Same interface and the same behaviour towards the broker as the stream it wraps: the queue
declared and consumed by the child, as Celery's receiver declares it, without
acknowledgements. A slow exporter fills the socket, the child blocks sending and stops reading,
and RabbitMQ holds the rest in the queue (its TTL applies), as when pika reads in the exporter.
An error of the child's connection is raised by :meth:`AmqpReaderProcess.read_batch` (or
:meth:`~AmqpReaderProcess.connect`) in the exporter, the child having exited; a child that
dies is :class:`pika.exceptions.StreamLostError`: the consumer counts the loss and reconnects
with a new child. The child ignores SIGINT and runs in a session of its own (the exporter
decides when it stops); when the exporter's end of the socket closes — :meth:`close`, or the
exporter killed — it closes its connection and exits within :data:`POLL_INTERVAL` seconds.
Messages read but still in the socket when the exporter is killed are lost with it, as pika's
own buffers were.
"""

from __future__ import annotations

import pickle
import signal
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

import pika
import pika.exceptions
from kombu import Queue

from exporter.child_process import start_child
from exporter.events.amqp_stream import AmqpEventStream, Delivered

#: Seconds the child waits for messages before it looks whether the exporter closed its end.
POLL_INTERVAL = 0.2
#: Seconds the child gathers messages after the first before it sends them: one message per
#: 20 ms at most while events trickle in (pickling, two system calls and the exporter's
#: wake-up are paid per message; at 8,000 events/s, a message per read took 44 % more CPU
#: than pika in the event thread).
SEND_INTERVAL = 0.02
#: Messages the child sends at once at most (a larger backlog goes in several).
MAX_SEND = 2000
#: Seconds the exporter waits for the child to connect, declare and consume (pika's own
#: connect timeout, ``socket_timeout``, applies within it).
CONNECT_TIMEOUT = 60.0
#: Seconds a closed child has to end before it is killed (a stopped or hung child): within
#: the consumer's own stop timeout.
EXIT_GRACE = 2.0
#: What the child sends once it consumes.
_READY = "consuming"


class AmqpReaderProcess:
    """An :class:`~exporter.events.amqp_stream.AmqpEventStream` in a child process, with the
    same interface: :meth:`connect`, :meth:`read_batch`, :meth:`close`.

    Args:
        params: where and how to connect (:func:`~exporter.events.amqp_stream.amqp_parameters`).
        queue: the event queue and its exchange
            (:func:`~exporter.events.amqp_stream.event_queue`).

    """

    def __init__(self, params: pika.ConnectionParameters, queue: Queue) -> None:
        self.params = params
        self.queue = queue
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None

    @property
    def pid(self) -> int | None:
        """The child's process id while one runs."""
        return self._process.pid if self._process is not None else None

    def connect(self) -> None:
        """Start a child that connects, declares the exchange and the queue as Celery's
        receiver does, binds it and consumes; return once it consumes.

        Raises:
            pika.exceptions.AMQPError: the child's connecting, declaring or consuming failed
                (the error it met), it exited (``StreamLostError``) or it did not answer
                within :data:`CONNECT_TIMEOUT` seconds.
            OSError: the child's socket failed, or it could not be started.

        """
        self.close()
        self._process, self._conn = start_child(__name__)
        try:
            self._conn.send((self.params, self.queue, sys.path))
            answer = self._receive(CONNECT_TIMEOUT)
        except BaseException:
            self.close()
            raise
        if answer == _READY:
            return
        self.close()
        if isinstance(answer, BaseException):
            raise answer
        raise pika.exceptions.AMQPConnectionError(
            f"the AMQP reader process did not consume within {CONNECT_TIMEOUT:.0f}s")

    def read_batch(self, timeout: float = 1.0) -> list[Delivered]:
        """The messages the child read since the last call (``(body, content type, content
        encoding, compression header)``, in order), waiting up to ``timeout`` seconds for a
        batch; ``[]`` when none came.

        Raises:
            pika.exceptions.AMQPError: the child's connection or channel was lost (the error
                it met; it exited), or the child itself is gone (``StreamLostError``).
            OSError: the child's socket failed.

        """
        if self._conn is None:
            raise pika.exceptions.ConnectionWrongStateError("not connected")
        message = self._receive(timeout)
        if message is None:
            return []
        if isinstance(message, list):
            return message
        self.close()
        if isinstance(message, BaseException):
            raise message
        raise pika.exceptions.StreamLostError(f"the AMQP reader process sent {message!r}")

    def _receive(self, timeout: float) -> Any:
        """The child's next message, or ``None`` when none came within ``timeout`` seconds.

        Raises:
            pika.exceptions.StreamLostError: the child's end of the socket closed (it exited).

        """
        conn, process = self._conn, self._process
        assert conn is not None and process is not None
        try:
            if not conn.poll(timeout):
                return None
            return pickle.loads(conn.recv_bytes())
        except (EOFError, OSError) as exc:
            self.close()
            raise pika.exceptions.StreamLostError(
                f"the AMQP reader process exited code={process.returncode}") from exc

    def kill(self) -> None:
        """Kill the child now, from any thread (SIGKILL: a stopped or hung child too); the
        thread reading it then gets ``StreamLostError``. For an exporter that exits while
        the consuming thread is stuck (in :meth:`connect`'s wait, say): a child must not
        outlive the exporter with its connection and the exclusive event queue.
        """
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()

    def close(self) -> None:
        """Close the socket and wait for the child to close its connection and exit (killed
        after :data:`EXIT_GRACE` seconds); idempotent.
        """
        conn, self._conn = self._conn, None
        process, self._process = self._process, None
        if conn is not None:
            conn.close()
        if process is not None:
            try:
                process.wait(POLL_INTERVAL + EXIT_GRACE)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _send(conn: Connection, message: Any) -> None:
    """Send ``message`` pickled; an error that cannot be pickled, or not rebuilt from its
    pickle (some of pika's take arguments their ``args`` do not keep), goes as an
    ``AMQPConnectionError`` naming its type and text.
    """
    try:
        data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        pickle.loads(data)
    except Exception:
        data = pickle.dumps(pika.exceptions.AMQPConnectionError(
            f"{type(message).__name__}: {message}"), pickle.HIGHEST_PROTOCOL)
    conn.send_bytes(data)


def child_main(conn: Connection) -> None:
    """The child process: consume with an :class:`AmqpEventStream` and send each batch through
    ``conn`` until the exporter closes its end.

    Messages in: ``(params, queue, sys.path)``, then nothing (the end of the socket stops it).
    Messages out: ``"consuming"`` once it consumes, then each batch read (a list of
    :data:`~exporter.events.amqp_stream.Delivered`); an exception it met connecting or
    reading is the last message before it exits.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    params, queue, path = conn.recv()
    sys.path[:] = path
    stream = AmqpEventStream(params, queue)
    try:
        try:
            stream.connect()
        except Exception as exc:
            _send(conn, exc)
            return
        _send(conn, _READY)
        pending: list[Delivered] = []
        first = 0.0  # when the first of `pending` was read
        while not conn.poll():  # the exporter's end closed: poll answers at once
            wait = max(0.0, first + SEND_INTERVAL - time.monotonic()) if pending \
                else POLL_INTERVAL
            error: Exception | None = None
            try:
                batch = stream.read_batch(timeout=wait)
            except Exception as exc:
                batch, error = [], exc
            if batch and not pending:
                first = time.monotonic()
            pending += batch
            if pending and (error is not None or len(pending) >= MAX_SEND
                            or time.monotonic() - first >= SEND_INTERVAL):
                conn.send_bytes(pickle.dumps(pending, pickle.HIGHEST_PROTOCOL))
                pending = []
            if error is not None:  # after what was read before it
                _send(conn, error)
                return
    except OSError:  # the exporter is gone
        pass
    finally:
        stream.close()


def main() -> None:
    """The child's entry point: :func:`child_main` on the socket that is its standard input."""
    child_main(Connection(sys.stdin.fileno()))
