"""Where the RabbitMQ fast path's time goes, on a fixed recorded workload without the broker.

    python benchmarks/amqp_consumer_cost.py [--tasks 2000] [--copies 10] [--rounds 3]
    python benchmarks/amqp_consumer_cost.py --stage pika --events 4000   # one stage, e.g. under
        valgrind --tool=callgrind (instructions per event: the difference of two --events runs)

The burst of ``ingest.py --broker amqp`` (``--tasks`` lifecycles rendered once through Celery's
dispatcher, replayed ``--copies`` times with fresh task ids) is delivered once by the local
RabbitMQ (127.0.0.1:5672, a private vhost) to the fast path's own stream
(:class:`~exporter.events.amqp_stream.AmqpEventStream`) through a recording proxy, which keeps
every byte the broker sent and when (after how many bytes from the client). Each measured pass
then connects to a replay server in a child process that sends the same bytes (the consumer tag
and queue name swapped for the new connection's, same length), as fast as the consumer reads:
the same frames every time, no broker competing for the 2 cores, nothing lost. Stages, each
cumulative, measured in the consuming thread (``time.thread_time``):

- ``pika``: ``read_batch`` only (pika reads and parses the frames);
- ``decode``: + the bodies decoded as the consumer decodes them
  (:func:`~exporter.events.redis_stream.decode_body`);
- ``model``: + ``Model.process_many`` per batch (no history);
- ``history``: + a real ``HistoryWriter`` (SQLite file) running meanwhile, as ``serve`` runs it;
  the writer's thread CPU apart;
- ``history-late``: the same, but the writer thread starts once every event is counted (its queue
  holds the whole burst): what the consuming thread pays for running next to the writer.

Printed per stage: the consuming thread's CPU seconds per 100k events, the writer's, the
wall seconds until every event was counted (medians over ``--rounds``, stages interleaved) and
the most history events a round dropped (``history``: ``serve``'s queue of 20,000 events
overflows when the writer falls that far behind).
"""

from __future__ import annotations

import argparse
import pickle
import re
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from celery import Celery

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eventload import (  # noqa: E402
    RabbitVhost,
    RedisServer,
    amqp_messages,
    free_port,
    prepare,
    publish_amqp,
    render,
)
from history_cost import new_model  # noqa: E402

from exporter.config import DEFAULT_HISTORY_QUEUE_SIZE  # noqa: E402
from exporter.events.amqp_stream import AmqpEventStream, amqp_parameters, event_queue  # noqa: E402
from exporter.events.redis_stream import accept_content, decode_body  # noqa: E402
from exporter.history import HistoryWriter, create_history_engine, upgrade  # noqa: E402

STAGES = ("pika", "decode", "model", "history", "history-late")
#: The names that differ per connection: pika's consumer tag and the event queue's node id.
_PER_CONNECTION = re.compile(rb"ctag1\.[0-9a-f]{32}|celeryev\.[0-9a-f-]{36}")


def _listener(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1)
    return sock


def _proxy(listener: socket.socket, out: dict[str, Any]) -> None:
    """Forward one client connection to RabbitMQ; record ``(client bytes so far, chunk)`` for
    every chunk the broker sent, and the client's bytes."""
    client, _ = listener.accept()
    upstream = socket.create_connection(("127.0.0.1", 5672))
    sent = bytearray()
    chunks: list[tuple[int, bytes]] = []
    while True:
        ready, _, _ = select.select([client, upstream], [], [])
        if client in ready:
            data = client.recv(65536)
            if not data:
                break
            sent += data
            upstream.sendall(data)
        if upstream in ready:
            data = upstream.recv(65536)
            if not data:
                break
            chunks.append((len(sent), data))
            client.sendall(data)
    client.close()
    upstream.close()
    out.update(chunks=chunks, client=bytes(sent))


def serve_replay(port: int, path: str) -> None:
    """Replay server (child process): send each recorded chunk once the client has sent as
    many bytes as when it was recorded, per-connection names swapped; one connection."""
    recording = pickle.loads(Path(path).read_bytes())
    listener = _listener(port)
    print("listening", flush=True)
    client, _ = listener.accept()
    received = bytearray()
    old = _PER_CONNECTION.findall(recording["client"])
    chunks, i = recording["chunks"], 0
    while i < len(chunks):
        while len(received) < chunks[i][0]:
            data = client.recv(65536)
            if not data:
                return
            received += data
        due = bytearray()
        while i < len(chunks) and chunks[i][0] <= len(received):
            due += chunks[i][1]
            i += 1
        data = bytes(due)
        # Only the names the client sent so far (the queue name before the consumer tag).
        for before, after in zip(old, _PER_CONNECTION.findall(bytes(received)), strict=False):
            data = data.replace(before, after)
        client.sendall(data)
    while client.recv(65536):  # until the consumer closes
        pass


def make_app(port: int, vhost: str) -> Celery:
    """The app whose event queue the fast path declares (TTL 300 s, as ``serve``'s default)."""
    app = Celery("cost", broker=f"amqp://guest:guest@127.0.0.1:{port}/{vhost}",
                 set_as_current=False)
    app.conf.event_queue_ttl = 300.0
    return app


def make_stream(app: Celery) -> AmqpEventStream:
    """The fast path's stream for ``app`` (not connected), with the parameters ``serve`` would
    take from it."""
    with app.connection_for_read() as conn:
        params = amqp_parameters(conn, app.conf.broker_read_url, {})
    assert params is not None
    return AmqpEventStream(params, event_queue(app))


def record(messages: list, path: str) -> str:
    """Deliver ``messages`` from the local RabbitMQ to an ``AmqpEventStream`` through the
    recording proxy; write the recording to ``path``; return the vhost name used (the replay
    must connect with a name of the same length)."""
    vhost = RabbitVhost()
    try:
        port = free_port()
        listener = _listener(port)
        out: dict[str, Any] = {}
        proxy = threading.Thread(target=_proxy, args=(listener, out))
        proxy.start()
        stream = make_stream(make_app(port, vhost.name))
        stream.connect()
        publish_amqp(vhost.url(), messages)
        got, deadline = 0, time.monotonic() + 300
        while got < len(messages) and time.monotonic() < deadline:
            got += len(stream.read_batch(timeout=1.0))
        stream.close()
        if got < len(messages):
            raise RuntimeError(f"recorded {got} of {len(messages)} messages")
        proxy.join(30)
        listener.close()
    finally:
        vhost.delete()
    Path(path).write_bytes(pickle.dumps(out))
    return vhost.name


def thread_cpu(thread: threading.Thread) -> float:
    """CPU seconds ``thread`` (started) has used so far (user + system, its own clock)."""
    assert thread.ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def measure(stage: str, path: str, vhost: str, events: int) -> dict[str, float]:
    """One pass of ``stage`` over the first ``events`` events of the recording at ``path``
    (connecting with the recorded ``vhost`` name): ``{"cpu": consuming thread's CPU s per 100k
    events, "writer": the writer thread's, "wall": seconds until every event was counted,
    "events": events counted, "dropped": history events dropped}``.

    Raises:
        RuntimeError: the history writer did not flush within 300 s.

    """
    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), path],
                              stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None and server.stdout.readline().strip() == "listening"
    writer = None
    if stage.startswith("history"):
        directory = tempfile.mkdtemp(prefix="jobmon-bench-")
        engine = create_history_engine(f"sqlite:///{directory}/history.db")
        upgrade(engine)
        if stage == "history":  # serve's queue size
            writer = HistoryWriter(engine)
            writer.start()
        else:  # the whole burst waits in the queue
            writer = HistoryWriter(engine, capacity=max(events, DEFAULT_HISTORY_QUEUE_SIZE))
    model = new_model(writer.submit if writer is not None else None)
    accept = accept_content(["json"])
    stream = make_stream(make_app(port, vhost))
    stream.connect()
    got = 0
    cpu0, wall0 = time.thread_time(), time.perf_counter()
    writer_cpu0 = thread_cpu(writer) if writer is not None and writer.is_alive() else 0.0
    while got < events:
        delivered = stream.read_batch(timeout=5.0)
        if stage == "pika":
            got += len(delivered)
            continue
        decoded: list[Any] = []
        for message in delivered:
            decoded.extend(decode_body(*message, accept))
        got += len(decoded)
        if stage != "decode":
            model.process_many(decoded)
    wall = time.perf_counter() - wall0
    cpu = time.thread_time() - cpu0
    writer_cpu, dropped = 0.0, 0
    if writer is not None:
        if stage == "history-late":
            writer.start()
            writer_cpu0 = thread_cpu(writer)
        if not writer.flush(300):
            raise RuntimeError("the history writer did not flush")
        writer_cpu = thread_cpu(writer) - writer_cpu0
        writer.stop(30)
        dropped = sum(writer.stats().dropped.values())
    stream.close()
    server.wait(10)
    per = 1e5 / got
    return {"cpu": cpu * per, "writer": writer_cpu * per, "wall": wall, "events": got,
            "dropped": dropped}


def main() -> None:
    """Record the burst (unless ``--recording`` exists), measure the stages, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stage", choices=STAGES, action="append",
                        help="measure only these stages (default: all)")
    parser.add_argument("--events", type=int, default=None,
                        help="stop after this many events (default: the whole burst)")
    parser.add_argument("--recording", default=None,
                        help="reuse this recording file (written there when missing)")
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_replay(int(args.serve[0]), args.serve[1])
        return
    path = args.recording or str(Path(tempfile.mkdtemp(prefix="jobmon-amqp-")) / "recording")
    meta = Path(path + ".vhost")
    if not Path(path).exists():
        server = RedisServer()
        try:
            template = render(server, tasks=args.tasks)
        finally:
            server.stop()
        messages = amqp_messages(prepare(template, args.copies))
        meta.write_text(f"{record(messages, path)} {len(messages)}")
    vhost, total = meta.read_text().split()
    events = min(args.events or int(total), int(total))
    stages = args.stage or list(STAGES)
    print(f"recording {path}: {total} events; measuring {events}, {args.rounds} rounds")
    results: dict[str, list[dict[str, float]]] = {stage: [] for stage in stages}
    for _ in range(args.rounds):
        for stage in stages:
            results[stage].append(measure(stage, path, vhost, events))
    print(f"{'stage':14} {'thread CPU s/100k':>18} {'writer CPU s/100k':>18} {'wall s':>7} "
          f"{'events/s':>9} {'dropped':>8}")
    for stage, runs in results.items():
        cpu = statistics.median(r["cpu"] for r in runs)
        writer = statistics.median(r["writer"] for r in runs)
        wall = statistics.median(r["wall"] for r in runs)
        dropped = max(r["dropped"] for r in runs)
        each = " ".join("{cpu:.2f}/{writer:.2f}/{wall:.2f}".format(**r) for r in runs)
        print(f"{stage:14} {cpu:>18.3f} {writer:>18.3f} {wall:>7.2f} {events / wall:>9.0f}"
              f" {dropped:>8}"
              f"   (rounds, CPU/writer/wall: {each})")


if __name__ == "__main__":
    main()
