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
    render,
    replay,
    wait_subscribed,
)

ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")

BASELINE = r"""
import sys, time, resource
from celery import Celery
url, expected = sys.argv[1], int(sys.argv[2])
app = Celery("baseline", broker=url, set_as_current=False)
count = 0
first = None
def on_event(event):
    global count, first
    if first is None:
        first = time.perf_counter()
    count += 1
    if count >= expected:
        recv.should_stop = True
with app.connection_for_read() as conn:
    recv = app.events.Receiver(conn, handlers={"*": on_event})
    orig = recv.on_consume_ready
    def ready(*a, **k):
        orig(*a, **k)
        print("ready", flush=True)
    recv.on_consume_ready = ready
    recv.capture(limit=None, timeout=None, wakeup=False)
done = time.perf_counter()
print(f"done {count} {done:.6f}", flush=True)
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


def measure_baseline(server: RedisServer, template, copies: int) -> dict:
    expected = len(template.messages) * copies
    before = pattern_subscribers(server)
    proc = subprocess.Popen([sys.executable, "-c", BASELINE, server.url(2), str(expected)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    wait_subscribed(server, before)
    # The burst waits in Redis while the consumer is stopped: this measures the consumer's
    # capacity, not the generator's speed.
    os.kill(proc.pid, signal.SIGSTOP)
    replay(server, 2, template, copies)
    cpu0 = cpu_seconds(proc.pid)
    start = time.perf_counter()
    os.kill(proc.pid, signal.SIGCONT)
    line = ""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("done"):
            break
    cpu = cpu_seconds(proc.pid) - cpu0
    rss = peak_rss_mb(proc.pid)
    proc.wait(10)
    count, done_at = (int(line.split()[1]), float(line.split()[2])) if line else (0, start)
    return {"events": count, "seconds": done_at - start, "cpu": cpu, "rss": rss,
            "expected": expected}


def measure_exporter(server: RedisServer, template, copies: int, db: int, *extra: str) -> dict:
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
    os.kill(proc.pid, signal.SIGSTOP)
    replay(server, db, template, copies)
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
        if count >= expected or now - last_change > 10:
            break
        time.sleep(0.05)
    cpu = cpu_seconds(proc.pid) - cpu0
    rss = peak_rss_mb(proc.pid)
    proc.terminate()
    proc.wait(30)
    return {"events": count, "seconds": last_change - start, "cpu": cpu, "rss": rss,
            "expected": expected}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--copies", type=int, default=10)
    args = parser.parse_args()
    server = RedisServer(lift_pubsub_limit=True)
    try:
        template = render(server, tasks=args.tasks)
        print(f"template: {len(template.messages)} events ({args.tasks} lifecycles), "
              f"replayed {args.copies}x as a burst")
        history_dir = tempfile.mkdtemp(prefix="jobmon-bench-history-")
        rows = [
            ("celery EventReceiver (count only)",
             measure_baseline(server, template, args.copies)),
            ("jobmon, kombu path, no history",
             measure_exporter(server, template, args.copies, 3, "--no-redis-fast-path",
                              "--no-history")),
            ("jobmon, Redis fast path, no history",
             measure_exporter(server, template, args.copies, 4, "--no-history")),
            ("jobmon, fast path + history (SQLite)",
             measure_exporter(server, template, args.copies, 5, "--history-url",
                              f"sqlite:///{history_dir}/history.db")),
        ]
    finally:
        server.stop()
    base_rate = rows[0][1]["events"] / rows[0][1]["seconds"]
    print(f"{'consumer':38} {'events':>8} {'seconds':>8} {'events/s':>9} {'x base':>7} "
          f"{'CPU s/100k':>10} {'ev/CPU-s':>9} {'peak RSS MB':>11} {'lost %':>7}")
    for label, r in rows:
        rate = r["events"] / r["seconds"]
        lost = 100.0 * (r["expected"] - r["events"]) / r["expected"]
        print(f"{label:38} {r['events']:>8} {r['seconds']:>8.2f} {rate:>9.0f} "
              f"{rate / base_rate:>7.2f} {r['cpu'] / r['events'] * 1e5:>10.2f} "
              f"{r['events'] / r['cpu']:>9.0f} {r['rss']:>11.1f} {lost:>7.2f}")


if __name__ == "__main__":
    main()
