"""AMQP clients on the event workload: which one reads Celery's task events fastest?

    python benchmarks/amqp_clients.py [--tasks 2000] [--copies 10] [--rounds 3]

Each consumer runs in a process of its own, declares its own event queue as Celery's receiver
does (``celeryev.<uuid>``, auto-delete, non-durable, ``x-message-ttl`` 300 s, bound to the
``celeryev`` topic exchange with ``#``), consumes without acknowledgements and without
heartbeats (as the receiver does: a stopped consumer must not be dropped by the broker) and
decodes every body into the event dicts kombu gives (plain JSON with orjson, as the Redis fast
path does). The burst (``--tasks`` lifecycles rendered once through Celery's dispatcher,
replayed ``--copies`` times with fresh task ids, see ``eventload.py``) is published into the
private vhost while the consumer is stopped (SIGSTOP); the consumer is timed from
SIGCONT until it counted every event. Candidates:

- ``celery EventReceiver`` whose handler only counts (the baseline: kombu + py-amqp, kombu's
  decoding and the receiver's clock bookkeeping);
- ``kombu Consumer`` (py-amqp) with orjson decoding: what a kombu path can reach;
- ``pika BlockingConnection`` and ``pika SelectConnection``;
- ``aiormq`` (pamqp frames, asyncio);
- ``amqpstorm`` (its own I/O thread).

Several rounds, the order rotated each round (the machine is shared and noisy); printed per
round and as medians: events/s, CPU ms per event, and both against the baseline of the same
round. Needs RabbitMQ on 127.0.0.1:5672 (guest/guest) and ``rabbitmqctl``; a private vhost is
created for the run and deleted afterwards.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eventload import (  # noqa: E402
    RabbitVhost,
    RedisServer,
    amqp_messages,
    prepare,
    publish_amqp,
    render,
)

CLK_TCK = os.sysconf("SC_CLK_TCK")
QUEUE_TTL = 300.0

#: Shared by every consumer: counting, the stall watchdog (events lost: stop 5 s after the
#: last one) and the body decoding (kombu's result for plain JSON, kombu itself otherwise).
PRELUDE = r"""
import os, signal, sys, threading, time, uuid
import orjson
from kombu.serialization import loads as kombu_loads
url, expected, ttl = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
queue = "celeryev." + str(uuid.uuid4())
arguments = {"x-message-ttl": int(ttl * 1000)}
count = 0
last = time.perf_counter()
resumed = None
def on_resume(*_):
    global resumed
    resumed = time.perf_counter()
signal.signal(signal.SIGCONT, on_resume)
JSON = "application/json"
MARKER = b'"__type__"'
DIGITS = bytes.maketrans(b"123456789", b"000000000")
LONG = b"0" * 19

def finish():
    print(f"done {count} {last:.6f}", flush=True)
    os._exit(0)

def decode(body, content_type, content_encoding):
    if isinstance(body, str):
        body = body.encode()
    if (content_type == JSON and MARKER not in body
            and LONG not in body.translate(DIGITS)):
        return orjson.loads(body)
    return kombu_loads(body, content_type, content_encoding, accept={JSON})

def handle(body, content_type, content_encoding):
    global count, last
    events = decode(body, content_type, content_encoding)
    count += len(events) if isinstance(events, list) else 1
    last = time.perf_counter()
    if count >= expected:
        finish()

def watchdog():  # events were lost: stop 5 s after the last one (20 s if none came)
    while True:
        time.sleep(0.5)
        now = time.perf_counter()
        if (count and now - last > 5) or (not count and resumed and now - resumed > 20):
            finish()

threading.Thread(target=watchdog, daemon=True).start()
"""

CLIENTS: dict[str, str] = {
    "celery EventReceiver (count only)": r"""
from celery import Celery
app = Celery("baseline", broker=url, set_as_current=False)
app.conf.event_queue_ttl = ttl
def on_event(event):
    global count, last
    count += 1
    last = time.perf_counter()
    if count >= expected:
        finish()
with app.connection_for_read() as conn:
    recv = app.events.Receiver(conn, handlers={"*": on_event})
    orig = recv.on_consume_ready
    def ready(*a, **k):
        orig(*a, **k)
        print("ready", flush=True)
    recv.on_consume_ready = ready
    recv.capture(limit=None, timeout=None, wakeup=False)
""",
    "kombu Consumer (py-amqp), orjson": r"""
from kombu import Connection, Consumer, Exchange, Queue
with Connection(url) as conn:
    channel = conn.channel()
    q = Queue(queue, Exchange("celeryev", type="topic"), routing_key="#", auto_delete=True,
              durable=False, message_ttl=ttl)
    def on_message(message):
        handle(message.body, message.content_type, message.content_encoding)
    consumer = Consumer(channel, queues=[q], on_message=on_message, no_ack=True)
    consumer.consume()
    print("ready", flush=True)
    while True:
        conn.drain_events()
""",
    "pika BlockingConnection": r"""
import pika
conn = pika.BlockingConnection(pika.URLParameters(url + "?heartbeat=0"))
ch = conn.channel()
ch.exchange_declare("celeryev", "topic", durable=True)
ch.queue_declare(queue, auto_delete=True, arguments=arguments)
ch.queue_bind(queue, "celeryev", "#")
def on_message(ch, method, props, body):
    handle(body, props.content_type, props.content_encoding)
ch.basic_consume(queue, on_message, auto_ack=True)
print("ready", flush=True)
ch.start_consuming()
""",
    "pika SelectConnection": r"""
import pika
def on_message(ch, method, props, body):
    handle(body, props.content_type, props.content_encoding)
def on_open(conn):
    conn.channel(on_open_callback=on_channel)
def on_channel(ch):
    ch.exchange_declare("celeryev", "topic", durable=True,
                        callback=lambda _: ch.queue_declare(queue, auto_delete=True,
                                                            arguments=arguments,
                                                            callback=lambda _: bind(ch)))
def bind(ch):
    ch.queue_bind(queue, "celeryev", "#", callback=lambda _: consume(ch))
def consume(ch):
    ch.basic_consume(queue, on_message, auto_ack=True,
                     callback=lambda _: print("ready", flush=True))
conn = pika.SelectConnection(pika.URLParameters(url + "?heartbeat=0"),
                              on_open_callback=on_open)
conn.ioloop.start()
""",
    "aiormq": r"""
import asyncio, aiormq
async def main():
    conn = await aiormq.connect(url + "?heartbeat=0")
    ch = await conn.channel()
    await ch.exchange_declare("celeryev", exchange_type="topic", durable=True)
    await ch.queue_declare(queue, auto_delete=True, arguments=arguments)
    await ch.queue_bind(queue, "celeryev", routing_key="#")
    async def on_message(message):
        props = message.header.properties
        handle(message.body, props.content_type, props.content_encoding)
    await ch.basic_consume(queue, on_message, no_ack=True)
    print("ready", flush=True)
    await asyncio.Future()
asyncio.run(main())
""",
    "amqpstorm": r"""
import amqpstorm
conn = amqpstorm.UriConnection(url + "?heartbeat=0")
ch = conn.channel()
ch.exchange.declare("celeryev", "topic", durable=True)
ch.queue.declare(queue, auto_delete=True, arguments=arguments)
ch.queue.bind(queue, "celeryev", "#")
def on_message(body, channel, method, props):
    handle(body, props.get("content_type"), props.get("content_encoding"))
ch.basic.consume(on_message, queue, no_ack=True)
print("ready", flush=True)
ch.start_consuming(to_tuple=True)
""",
}
BASELINE = next(iter(CLIENTS))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def measure(name: str, vhost: RabbitVhost, messages: list, expected: int) -> dict:
    """Run the consumer ``name`` against a burst of ``messages`` published while it is stopped.

    Returns ``{"events", "seconds" (SIGCONT until the last event), "cpu" (seconds), "expected"}``.
    """
    code = PRELUDE + CLIENTS[name]
    proc = subprocess.Popen([sys.executable, "-c", code, vhost.url(), str(expected),
                             str(QUEUE_TTL)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    try:
        line = proc.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"{name} did not start: {line!r}")
        vhost.wait_event_queue()
        os.kill(proc.pid, signal.SIGSTOP)
        publish_amqp(vhost.url(), messages)
        cpu0 = cpu_seconds(proc.pid)
        start = time.perf_counter()
        os.kill(proc.pid, signal.SIGCONT)
        cpu = 0.0
        line = ""
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line.startswith("done") or not line:
                break
        # The consumer exits right after printing: read its CPU while it is a zombie.
        proc_stat = Path(f"/proc/{proc.pid}/stat")
        if proc_stat.exists():
            cpu = cpu_seconds(proc.pid) - cpu0
    finally:
        if proc.poll() is None:
            proc.wait(10) if line.startswith("done") else proc.kill()
        proc.wait(10)
    count, done_at = (int(line.split()[1]), float(line.split()[2])) if line else (0, start)
    return {"events": count, "seconds": done_at - start, "cpu": cpu, "expected": expected}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", action="append", default=[],
                        help="measure only these candidates (substring; the baseline always)")
    args = parser.parse_args()
    names = [n for n in CLIENTS if n == BASELINE or not args.only
             or any(o.lower() in n.lower() for o in args.only)]
    server = RedisServer()
    try:
        template = render(server, tasks=args.tasks)
    finally:
        server.stop()
    messages = amqp_messages(prepare(template, args.copies))
    expected = len(messages)
    print(f"burst of {expected} events ({args.tasks} lifecycles x {args.copies}), "
          f"{args.rounds} rounds", flush=True)
    vhost = RabbitVhost()
    results: dict[str, list[dict]] = {n: [] for n in names}
    try:
        for k in range(args.rounds):
            order = names[k % len(names):] + names[:k % len(names)]
            round_rows = {n: measure(n, vhost, messages, expected) for n in order}
            base = round_rows[BASELINE]
            base_rate = base["events"] / base["seconds"]
            base_cpu = base["cpu"] / base["events"]
            print(f"round {k + 1}:", flush=True)
            for n in names:
                r = round_rows[n]
                r["rate"] = r["events"] / r["seconds"]
                r["cpu_ms"] = 1000 * r["cpu"] / r["events"]
                r["x_rate"] = r["rate"] / base_rate
                r["x_cpu"] = r["cpu"] / r["events"] / base_cpu
                results[n].append(r)
                lost = r["expected"] - r["events"]
                print(f"  {n:36} {r['rate']:>9.0f} ev/s  x{r['x_rate']:.2f}  "
                      f"{r['cpu_ms']:.4f} CPU ms/ev  x{r['x_cpu']:.2f}  lost {lost}",
                      flush=True)
    finally:
        vhost.delete()
    print(f"\nmedians over {args.rounds} rounds:")
    print(f"{'client':36} {'events/s':>9} {'x base':>7} {'CPU ms/ev':>10} {'x base':>7} "
          f"{'lost':>5}")
    for n in names:
        rows = results[n]
        med = {key: statistics.median(r[key] for r in rows)
               for key in ("rate", "x_rate", "cpu_ms", "x_cpu")}
        lost = max(r["expected"] - r["events"] for r in rows)
        print(f"{n:36} {med['rate']:>9.0f} {med['x_rate']:>7.2f} {med['cpu_ms']:>10.4f} "
              f"{med['x_cpu']:>7.2f} {lost:>5}")


if __name__ == "__main__":
    main()
