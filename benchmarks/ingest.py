"""Ingest benchmark: how many events/s `celery-jobmon serve` counts, next to Celery's receiver.

    python benchmarks/ingest.py [--tasks 2000] [--copies 10]

Renders ``--tasks`` lifecycles (20 names, 4 queues, 4 workers, 5 % failures) once through
Celery's dispatcher, then replays them ``--copies`` times (fresh task ids per copy) as a burst
into a private Redis while the consumer is stopped (SIGSTOP), and times the consumer from
SIGCONT until it counted everything — its capacity, not the generator's speed. The pub/sub
output limit is lifted for this (capacity, not Redis' disconnect policy). Two
consumers are measured in the same run: a plain ``celery.events.EventReceiver`` whose handler
only counts (the kombu path's ceiling) and the real exporter process — on the kombu path, on
the Redis fast path, and on the fast path with the SQLite history on. Printed per consumer:
events, seconds until all were counted, events/s, CPU seconds per 100k events, the one-core
capacity that implies (events per CPU second: the burst rate is capped by the generator when the
consumer is faster than it), peak RSS and loss.
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
    RedisServer,
    free_port,
    pattern_subscribers,
    prepare,
    render,
    replay_batches,
    wait_subscribed,
)

ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")

BASELINE = r"""
import sys, time, resource
from celery import Celery
import threading
url, expected = sys.argv[1], int(sys.argv[2])
app = Celery("baseline", broker=url, set_as_current=False)
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


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def counted(url: str) -> int:
    text = httpx.get(url, timeout=10).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == "celery_jobmon_events_received":
            total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return int(total)


def scalar(url: str, name: str) -> float:
    for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    return float("nan")


def measure_baseline(server: RedisServer, template, copies: int,
                     rate: float | None = None) -> dict:
    expected = len(template.messages) * copies
    before = pattern_subscribers(server)
    proc = subprocess.Popen([sys.executable, "-c", BASELINE, server.url(2), str(expected)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    wait_subscribed(server, before)
    batches = prepare(template, copies)
    cpu0 = cpu_seconds(proc.pid)
    start = time.perf_counter()
    if rate:
        replay_batches(server, 2, batches, rate=rate)
    else:
        # The burst waits in Redis while the consumer is stopped: this measures the
        # consumer's capacity, not the generator's speed.
        os.kill(proc.pid, signal.SIGSTOP)
        replay_batches(server, 2, batches)
        cpu0 = cpu_seconds(proc.pid)
        start = time.perf_counter()
        os.kill(proc.pid, signal.SIGCONT)
    line = ""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("done") or not line:
            break
    cpu = cpu_seconds(proc.pid) - cpu0
    rss = peak_rss_mb(proc.pid)
    proc.wait(10)
    count, done_at = (int(line.split()[1]), float(line.split()[2])) if line else (0, start)
    return {"events": count, "seconds": done_at - start, "cpu": cpu, "rss": rss,
            "expected": expected}


def measure_exporter(server: RedisServer, template, copies: int, db: int, *extra: str,
                     rate: float | None = None) -> dict:
    expected = len(template.messages) * copies
    before = pattern_subscribers(server)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "serve", "--broker-url", server.url(db),
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
    wait_subscribed(server, before)
    batches = prepare(template, copies)
    cpu0 = cpu_seconds(proc.pid)
    start = time.perf_counter()
    if rate:
        replay_batches(server, db, batches, rate=rate)
    else:
        os.kill(proc.pid, signal.SIGSTOP)
        replay_batches(server, db, batches)
        cpu0 = cpu_seconds(proc.pid)
        start = time.perf_counter()
        os.kill(proc.pid, signal.SIGCONT)
    count = 0
    last_change = time.perf_counter()
    while True:
        now_count = counted(url)
        now = time.perf_counter()
        if now_count != count:
            count, last_change = now_count, now
        if count >= expected or now - last_change > 5:
            break
        time.sleep(0.05)
    cpu = cpu_seconds(proc.pid) - cpu0
    rss = peak_rss_mb(proc.pid)
    gaps = int(scalar(url, "celery_jobmon_event_gaps_total"))
    proc.terminate()
    proc.wait(30)
    return {"events": count, "seconds": last_change - start, "cpu": cpu, "rss": rss,
            "expected": expected, "gaps": gaps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--rate", type=float, default=None,
                        help="sustained mode: publish at this many events/s (default: burst)")
    parser.add_argument("--duration", type=float, default=60.0,
                        help="sustained mode: seconds to publish for")
    args = parser.parse_args()
    sustained = args.rate is not None
    # Sustained mode keeps Redis' default pub/sub output limit (what production sees): a
    # consumer that falls 32 MB behind is disconnected and loses events.
    server = RedisServer(lift_pubsub_limit=not sustained)
    try:
        template = render(server, tasks=args.tasks)
        copies = (max(1, int(args.rate * args.duration / len(template.messages)))
                  if sustained else args.copies)
        mode = (f"sustained {args.rate:.0f} events/s for ~{args.duration:.0f} s, default "
                f"pub/sub limit" if sustained else f"{copies}x as a burst")
        print(f"template: {len(template.messages)} events ({args.tasks} lifecycles), "
              f"replayed {mode}")
        history_dir = tempfile.mkdtemp(prefix="jobmon-bench-history-")
        rate = args.rate
        rows = [
            ("celery EventReceiver (count only)",
             measure_baseline(server, template, copies, rate=rate)),
            ("jobmon, kombu path, no history",
             measure_exporter(server, template, copies, 3, "--no-redis-fast-path",
                              "--no-history", rate=rate)),
            ("jobmon, Redis fast path, no history",
             measure_exporter(server, template, copies, 4, "--no-history", rate=rate)),
            ("jobmon, fast path + history (SQLite)",
             measure_exporter(server, template, copies, 5, "--history-url",
                              f"sqlite:///{history_dir}/history.db", rate=rate)),
        ]
    finally:
        server.stop()
    base_rate = rows[0][1]["events"] / rows[0][1]["seconds"]
    print(f"{'consumer':38} {'events':>8} {'seconds':>8} {'events/s':>9} {'x base':>7} "
          f"{'CPU s/100k':>10} {'ev/CPU-s':>9} {'peak RSS MB':>11} {'lost %':>7} {'gaps':>5}")
    for label, r in rows:
        rate_seen = r["events"] / r["seconds"]
        lost = 100.0 * (r["expected"] - r["events"]) / r["expected"]
        print(f"{label:38} {r['events']:>8} {r['seconds']:>8.2f} {rate_seen:>9.0f} "
              f"{rate_seen / base_rate:>7.2f} {r['cpu'] / r['events'] * 1e5:>10.2f} "
              f"{r['events'] / r['cpu']:>9.0f} {r['rss']:>11.1f} {lost:>7.2f} "
              f"{r.get('gaps', '-'):>5}")


if __name__ == "__main__":
    main()
