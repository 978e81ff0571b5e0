"""Ingest benchmark: how many events/s `celery-jobmon serve` counts, next to Celery's receiver.

    python benchmarks/ingest.py [--tasks 2000] [--copies 10]

Renders ``--tasks`` lifecycles (20 names, 4 queues, 4 workers, 5 % failures) once through
Celery's dispatcher, then replays them ``--copies`` times (fresh task ids per copy) as a burst
into a private Redis while the consumer is stopped (SIGSTOP), and times the consumer from
SIGCONT until it counted everything — its capacity, not the generator's speed. The pub/sub
output limit is lifted for this (capacity, not Redis' disconnect policy). Two
consumers are measured in the same run: a plain ``celery.events.EventReceiver`` whose handler
only counts (the kombu path's ceiling) and the real exporter process — on the kombu path, on
the Redis fast path, and on the fast path with the SQLite history on, its writer in a child
process (serve's default) and in a thread (``--history-writer thread``) (``--broker amqp``: the
kombu path; the RabbitMQ fast path with pika in a reader process (serve's default) and in the
event thread (``--amqp-reader thread``), each without the history; the fast path with the
history: both readers with the writer process, and the reader and writer threads together;
with ``--rate`` too, the queues keeping messages 300 s). Printed per consumer:
events, seconds until all were counted, events/s, CPU seconds per 100k events, the one-core
capacity that implies (events per CPU second: the burst rate is capped by the generator when the
consumer is faster than it), peak RSS and loss: ``lost %`` what never reached the consumer,
``hist drop`` the events the history writer dropped (``celery_jobmon_history_dropped_total``).
CPU and peak RSS are the exporter's and its child processes' (the history writer, the AMQP
reader) together (the sum of the peaks). A second table splits each consumer's CPU per 100k
events by process — the exporter, its AMQP reader, its history writer — with the broker's own
(the private redis-server, RabbitMQ's ``beam.smp``) over the same interval, and the rate all of
them together would allow on this machine's cores (``cores x 100k / their CPU s per 100k``):
where a consumer's rate sits near that ceiling, the machine's CPU is what limits it.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eventload import (  # noqa: E402
    RabbitVhost,
    RedisServer,
    amqp_messages,
    free_port,
    pattern_subscribers,
    prepare,
    publish_amqp,
    render,
    replay_batches,
    wait_subscribed,
)

ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: ``event_queue_ttl`` of the baseline receiver, seconds (the exporter's default is the same):
#: Celery's default of 5 s makes RabbitMQ drop what a stopped or busy consumer has not read.
QUEUE_TTL = 300.0

BASELINE = r"""
import sys, time, resource
from celery import Celery
import threading
url, expected, ttl = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
app = Celery("baseline", broker=url, set_as_current=False)
app.conf.event_queue_ttl = ttl  # RabbitMQ: Celery's default 5 s would drop most of a burst
count = 0
last = time.perf_counter()
def on_event(event):
    global count, last
    count += 1
    last = time.perf_counter()
    if count >= expected:
        recv.should_stop = True
def idle_stop():  # events were lost: stop 5 s after the last one
    while not recv.should_stop:
        time.sleep(0.5)
        if count and time.perf_counter() - last > 5:
            recv.should_stop = True
with app.connection_for_read() as conn:
    recv = app.events.Receiver(conn, handlers={"*": on_event})
    orig = recv.on_consume_ready
    def ready(*a, **k):
        orig(*a, **k)
        print("ready", flush=True)
    recv.on_consume_ready = ready
    threading.Thread(target=idle_stop, daemon=True).start()
    try:
        recv.capture(limit=None, timeout=None, wakeup=False)
    except Exception as exc:  # e.g. disconnected by Redis as a slow pub/sub client
        print(f"error {type(exc).__name__}", file=sys.stderr, flush=True)
print(f"done {count} {last:.6f}", flush=True)
"""


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (the exporter's history writer and AMQP reader)."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found.extend(process_tree(int(child)))
    return found


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of the one process ``pid`` (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


#: A child process's role, by the module its command line runs (``exporter.child_process``).
ROLES = {b"exporter.events.amqp_reader": "reader", b"exporter.history.child": "writer"}


def cpu_by_role(pid: int) -> dict[str, float]:
    """CPU seconds of the exporter ``pid`` and of each child by :data:`ROLES` (``other``: a
    child of another kind, the baseline's none)."""
    split = {"exporter": process_cpu(pid)}
    for member in process_tree(pid)[1:]:
        cmdline = Path(f"/proc/{member}/cmdline").read_bytes()
        role = next((name for marker, name in ROLES.items() if marker in cmdline), "other")
        split[role] = split.get(role, 0.0) + process_cpu(member)
    return split


def rabbitmq_pid() -> int:
    """The pid of RabbitMQ's Erlang VM (``beam.smp``) on this machine.

    Raises:
        RuntimeError: no ``beam.smp`` process runs.

    """
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "beam.smp":
                    return int(entry.name)
            except OSError:
                continue
    raise RuntimeError("no beam.smp process: is RabbitMQ running?")


def cpu_split(pid: int, broker_pid: int) -> dict[str, float]:
    """:func:`cpu_by_role` of ``pid`` with the broker's CPU seconds under ``broker``."""
    return {**cpu_by_role(pid), "broker": process_cpu(broker_pid)}


def split_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds used by role between two :func:`cpu_split` readings (a child started in
    between counts from 0)."""
    return {role: after[role] - before.get(role, 0.0) for role in after}


def consumer_cpu(split: dict[str, float]) -> float:
    """The consumer's CPU seconds in a :func:`split_used` (every role but the broker)."""
    return sum(used for role, used in split.items() if role != "broker")


def peak_rss_mb(pid: int) -> float:
    """The sum of the peak RSS of ``pid`` and of its live descendants, MB."""
    peak = 0
    for member in process_tree(pid):
        for line in Path(f"/proc/{member}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peak += int(line.split()[1])
    return peak / 1024


#: Seconds between two reads of the exporter's ``/metrics`` while it works. A read costs the
#: exporter about 5 ms of CPU here (570 kB of exposition); every 0.05 s that was 0.5 s of CPU
#: per 100k events, more for a slower configuration (it is read for longer). When it ended is
#: the exporter's own receive time of the last event, not when a read saw the count.
POLL_SECONDS = 0.5


def progress(url: str) -> dict[str, float]:
    """Events counted, the exporter's time of the last event (seconds since the epoch) and
    what the history writer has not written yet (events queued + rows pending)."""
    text = httpx.get(url, timeout=10).text
    found = {"events": 0.0, "last_event": 0.0, "unwritten": 0.0}
    for family in text_string_to_metric_families(text):
        if family.name == "celery_jobmon_events_received":
            found["events"] += sum(s.value for s in family.samples if s.name.endswith("_total"))
        elif family.name == "celery_jobmon_last_event_timestamp_seconds":
            found["last_event"] = family.samples[0].value
        elif family.name in ("celery_jobmon_history_queue_depth",
                             "celery_jobmon_history_pending_rows"):
            found["unwritten"] += family.samples[0].value
    return found


def total(url: str, name: str) -> float:
    """The sum of every sample named ``name`` on the exporter's ``/metrics`` (0 when none)."""
    return sum(sample.value for family in text_string_to_metric_families(
        httpx.get(url, timeout=10).text) for sample in family.samples if sample.name == name)


def scalar(url: str, name: str) -> float:
    for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    return float("nan")


class RedisBroker:
    """Redis mode: one db per consumer, pub/sub publishing with pipelined ``PUBLISH``."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server

    def url(self, db: int) -> str:
        return self.server.url(db)

    def mark(self) -> int:
        return pattern_subscribers(self.server)

    def wait_consuming(self, mark: int) -> None:
        wait_subscribed(self.server, mark)

    def prepare(self, template, copies: int):
        return prepare(template, copies)

    def pid(self) -> int:
        """The private redis-server's process id."""
        return int(self.server.proc.pid)

    def publish(self, db: int, prepared, rate: float | None = None) -> None:
        replay_batches(self.server, db, prepared, rate=rate)


class AmqpBroker:
    """RabbitMQ mode: one private vhost for the run; the consumer's own event queue (bound to
    the ``celeryev`` topic exchange) must exist before the burst is published into it."""

    def __init__(self, vhost: RabbitVhost) -> None:
        self.vhost = vhost
        self._pid = rabbitmq_pid()

    def url(self, db: int) -> str:
        return self.vhost.url()

    def mark(self) -> int:
        return 0

    def wait_consuming(self, mark: int) -> None:
        self.vhost.wait_event_queue()

    def prepare(self, template, copies: int):
        return amqp_messages(prepare(template, copies))

    def pid(self) -> int:
        """RabbitMQ's process id (the machine's one broker, shared by every vhost)."""
        return self._pid

    def publish(self, db: int, prepared, rate: float | None = None) -> None:
        publish_amqp(self.vhost.url(), prepared, rate=rate)


def measure_baseline(broker, template, copies: int,
                     rate: float | None = None) -> dict:
    expected = len(template.messages) * copies
    before = broker.mark()
    proc = subprocess.Popen([sys.executable, "-c", BASELINE, broker.url(2), str(expected),
                             str(QUEUE_TTL)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    broker.wait_consuming(before)
    batches = broker.prepare(template, copies)
    split0 = cpu_split(proc.pid, broker.pid())
    start = time.perf_counter()
    published = None
    if rate:
        broker.publish(2, batches, rate=rate)
        published = time.perf_counter()
    else:
        # The burst waits in the broker while the consumer is stopped: this measures the
        # consumer's capacity, not the generator's speed.
        os.kill(proc.pid, signal.SIGSTOP)
        broker.publish(2, batches)
        split0 = cpu_split(proc.pid, broker.pid())
        start = time.perf_counter()
        os.kill(proc.pid, signal.SIGCONT)
    line = ""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("done") or not line:
            break
    split = split_used(split0, cpu_split(proc.pid, broker.pid()))
    cpu = consumer_cpu(split)
    rss = peak_rss_mb(proc.pid)
    proc.wait(10)
    count, done_at = (int(line.split()[1]), float(line.split()[2])) if line else (0, start)
    return {"events": count, "seconds": done_at - start, "cpu": cpu, "split": split, "rss": rss,
            "expected": expected, "published": published, "done_at": done_at,
            "start": start}


def measure_exporter(broker, template, copies: int, db: int, *extra: str,
                     rate: float | None = None) -> dict:
    expected = len(template.messages) * copies
    before = broker.mark()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "serve", "--broker-url", broker.url(db),
         "--listen", f"127.0.0.1:{port}", "--no-enable-events", "--log-level", "WARNING",
         *extra],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/metrics"
    ready = f"http://127.0.0.1:{port}/readyz"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(ready, timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("exporter did not become ready")
        time.sleep(0.1)
    broker.wait_consuming(before)
    batches = broker.prepare(template, copies)
    split0 = cpu_split(proc.pid, broker.pid())
    start, wall_start = time.perf_counter(), time.time()
    published = None
    if rate:
        broker.publish(db, batches, rate=rate)
        published = time.perf_counter()
    else:
        # The exporter and its children: the AMQP reader would read ahead into its socket.
        stopped = process_tree(proc.pid)
        for member in stopped:
            os.kill(member, signal.SIGSTOP)
        broker.publish(db, batches)
        split0 = cpu_split(proc.pid, broker.pid())
        start, wall_start = time.perf_counter(), time.time()
        for member in stopped:
            os.kill(member, signal.SIGCONT)
    # Until everything is counted and written (the history's whole cost is in the CPU), or
    # nothing changed for 5 s (events lost).
    seen = progress(url)
    last_change = time.perf_counter()
    while seen["events"] < expected or seen["unwritten"]:
        time.sleep(POLL_SECONDS)
        now_seen = progress(url)
        if now_seen != seen:
            seen, last_change = now_seen, time.perf_counter()
        elif time.perf_counter() - last_change > 5:
            break
    split = split_used(split0, cpu_split(proc.pid, broker.pid()))
    cpu = consumer_cpu(split)
    count = int(seen["events"])
    done_at = start + seen["last_event"] - wall_start
    rss = peak_rss_mb(proc.pid)
    gaps = int(scalar(url, "celery_jobmon_event_gaps_total"))
    # Events the history writer dropped (a full queue, for instance): "lost %" counts only
    # what never reached the exporter.
    dropped = int(total(url, "celery_jobmon_history_dropped_total"))
    proc.terminate()
    proc.wait(30)
    return {"events": count, "seconds": done_at - start, "cpu": cpu, "split": split, "rss": rss,
            "expected": expected, "gaps": gaps, "hist_dropped": dropped, "published": published,
            "done_at": done_at, "start": start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--rate", type=float, default=None,
                        help="sustained mode: publish at this many events/s (default: burst)")
    parser.add_argument("--duration", type=float, default=60.0,
                        help="sustained mode: seconds to publish for")
    parser.add_argument("--broker", choices=("redis", "amqp"), default="redis",
                        help="redis: a private redis-server; amqp: a private vhost on the "
                             "RabbitMQ at 127.0.0.1:5672 (guest/guest)")
    args = parser.parse_args()
    sustained = args.rate is not None
    # Sustained mode keeps Redis' default pub/sub output limit (what production sees): a
    # consumer that falls 32 MB behind is disconnected and loses events.
    server = RedisServer(lift_pubsub_limit=not sustained)
    vhost = None
    try:
        template = render(server, tasks=args.tasks)
        copies = (max(1, int(args.rate * args.duration / len(template.messages)))
                  if sustained else args.copies)
        mode = (f"sustained {args.rate:.0f} events/s for ~{args.duration:.0f} s, default "
                f"pub/sub limit" if sustained else f"{copies}x as a burst")
        print(f"template: {len(template.messages)} events ({args.tasks} lifecycles), "
              f"replayed {mode}")
        history_dir = tempfile.mkdtemp(prefix="jobmon-bench-history-")
        # A fresh file for each writer: --history-writer process (serve's default) and thread.
        history = ("--history-url", f"sqlite:///{history_dir}/process.db")
        history_thread = ("--history-url", f"sqlite:///{history_dir}/thread.db",
                          "--history-writer", "thread")
        rate = args.rate
        # pika in the event thread (--amqp-reader thread) instead of a reader process.
        reader_thread = ("--amqp-reader", "thread")
        history_reader_thread = ("--history-url", f"sqlite:///{history_dir}/reader-thread.db")
        if args.broker == "amqp":
            server.stop()  # only needed to render the template
            vhost = RabbitVhost()
            amqp = AmqpBroker(vhost)
            print(f"RabbitMQ vhost {vhost.name}; event queues with message TTL "
                  f"{QUEUE_TTL:.0f} s (baseline: event_queue_ttl; exporter: its default)")
            rows = [
                ("celery EventReceiver (count only)",
                 measure_baseline(amqp, template, copies, rate=rate)),
                ("jobmon, kombu path, no history",
                 measure_exporter(amqp, template, copies, 0, "--no-amqp-fast-path",
                                  "--no-history", rate=rate)),
                ("jobmon, RabbitMQ fast path, reader thread, no history",
                 measure_exporter(amqp, template, copies, 0, "--no-history", *reader_thread,
                                  rate=rate)),
                ("jobmon, RabbitMQ fast path, reader process, no history",
                 measure_exporter(amqp, template, copies, 0, "--no-history", rate=rate)),
                ("jobmon, fast path, reader thread + history (writer process)",
                 measure_exporter(amqp, template, copies, 0, *history_reader_thread,
                                  *reader_thread, rate=rate)),
                ("jobmon, fast path, reader process + history (writer process)",
                 measure_exporter(amqp, template, copies, 0, *history, rate=rate)),
                ("jobmon, fast path, reader thread + history (writer thread)",
                 measure_exporter(amqp, template, copies, 0, *history_thread,
                                  *reader_thread, rate=rate)),
            ]
        else:
            redis_ = RedisBroker(server)
            rows = [
                ("celery EventReceiver (count only)",
                 measure_baseline(redis_, template, copies, rate=rate)),
                ("jobmon, kombu path, no history",
                 measure_exporter(redis_, template, copies, 3, "--no-redis-fast-path",
                                  "--no-history", rate=rate)),
                ("jobmon, Redis fast path, no history",
                 measure_exporter(redis_, template, copies, 4, "--no-history", rate=rate)),
                ("jobmon, fast path + history (SQLite, writer process)",
                 measure_exporter(redis_, template, copies, 5, *history, rate=rate)),
                ("jobmon, fast path + history (SQLite, writer thread)",
                 measure_exporter(redis_, template, copies, 6, *history_thread, rate=rate)),
            ]
    finally:
        server.stop()
        if vhost is not None:
            vhost.delete()
    base_rate = rows[0][1]["events"] / rows[0][1]["seconds"]
    # Sustained mode: the rate the generator reached (on a busy machine it may fall short of
    # --rate), and the seconds from its last message to the consumer's last event counted
    # (about 0: it kept up; a backlog would grow it).
    print(f"{'consumer':62} {'events':>8} {'seconds':>8} {'events/s':>9} {'x base':>7} "
          f"{'CPU s/100k':>10} {'ev/CPU-s':>9} {'peak RSS MB':>11} {'lost %':>7} {'gaps':>5}"
          f" {'hist drop':>9}"
          + (f" {'behind s':>8} {'sent/s':>7}" if sustained else ""))
    for label, r in rows:
        rate_seen = r["events"] / r["seconds"]
        lost = 100.0 * (r["expected"] - r["events"]) / r["expected"]
        behind = (f" {r['done_at'] - r['published']:>8.2f} "
                  f"{r['expected'] / (r['published'] - r['start']):>7.0f}"
                  if sustained and r["published"] else "")
        print(f"{label:62} {r['events']:>8} {r['seconds']:>8.2f} {rate_seen:>9.0f} "
              f"{rate_seen / base_rate:>7.2f} {r['cpu'] / r['events'] * 1e5:>10.2f} "
              f"{r['events'] / r['cpu']:>9.0f} {r['rss']:>11.1f} {lost:>7.2f} "
              f"{r.get('gaps', '-'):>5} {r.get('hist_dropped', '-'):>9}{behind}")
    cores = os.cpu_count() or 1
    print(f"\nCPU s per 100k events by process, and the rate their sum allows on {cores} cores")
    print(f"{'consumer':62} {'exporter':>8} {'reader':>7} {'writer':>7} {'broker':>7} "
          f"{'sum':>7} {'ceiling/s':>9} {'events/s':>9}")
    for label, r in rows:
        per = {role: used / r["events"] * 1e5 for role, used in r["split"].items()}
        both = sum(per.values())
        print(f"{label:62} {per['exporter']:>8.2f} {per.get('reader', 0.0):>7.2f} "
              f"{per.get('writer', 0.0):>7.2f} {per['broker']:>7.2f} {both:>7.2f} "
              f"{cores * 1e5 / both:>9.0f} {r['events'] / r['seconds']:>9.0f}")


if __name__ == "__main__":
    main()
