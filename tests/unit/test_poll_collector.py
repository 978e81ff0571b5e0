"""Rendering a poll snapshot: golden exposition, absent-when-unknown, scrape cost."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, generate_latest

from exporter.metrics import catalogue as m
from exporter.metrics.collectors import PollCollector
from exporter.poll.snapshot import PollSnapshot, QueueState, WorkerPollState

T0 = 1_700_000_000.0

SNAPSHOT = PollSnapshot(
    taken_at=T0 - 2.5,
    duration=1.25,
    queues=(
        QueueState("a", {"0": 3, "3": 1, "6": 0, "9": 2}, consumers=0, waiting_since=T0 - 40),
        QueueState("b", {"": 7}, consumers=2),
    ),
    reserved={("examples.tasks.add", "a"): 2},
    scheduled={("examples.tasks.add", "a"): 1},
    earliest_eta={"examples.tasks.add": T0 + 60},
    oldest_running_start={"examples.tasks.sleep": T0 - 12.5},
    workers=(WorkerPollState("w1@h", 4, 1.5, 0.25, 2048),
             WorkerPollState("w2@h", None, None, None, None)),
    inspect_timeouts={"w2@h": 1},
    queues_read_at=T0 - 32.5,  # the broker has not answered since (stale lengths)
    other_keyprefixes=frozenset({"app1:"}),
)

GOLDEN = """\
celery_queue_length{priority="0",queue_name="a"} 3.0
celery_queue_length{priority="3",queue_name="a"} 1.0
celery_queue_length{priority="6",queue_name="a"} 0.0
celery_queue_length{priority="9",queue_name="a"} 2.0
celery_queue_length{priority="",queue_name="b"} 7.0
celery_queue_consumers{queue_name="a"} 0.0
celery_queue_consumers{queue_name="b"} 2.0
celery_queue_oldest_message_age_seconds{queue_name="a"} 40.0
celery_task_reserved{name="examples.tasks.add",queue_name="a"} 2.0
celery_task_scheduled{name="examples.tasks.add",queue_name="a"} 1.0
celery_task_scheduled_earliest_eta_timestamp_seconds{name="examples.tasks.add"} 1.70000006e+09
celery_task_oldest_running_seconds{name="examples.tasks.sleep"} 12.5
celery_worker_pool_size{hostname="w1@h"} 4.0
celery_worker_cpu_user_seconds_total{hostname="w1@h"} 1.5
celery_worker_cpu_system_seconds_total{hostname="w1@h"} 0.25
celery_worker_max_rss_bytes{hostname="w1@h"} 2048.0
celery_inspect_timeouts_total{hostname="w2@h"} 1.0
celery_jobmon_poll_age_seconds 2.5
celery_jobmon_queue_lengths_age_seconds 32.5
celery_jobmon_redis_other_keyprefixes 1.0
celery_jobmon_poll_duration_seconds 1.25
"""


def render(snapshot: PollSnapshot | None, now: float = T0) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PollCollector(lambda: snapshot, "celery_", lambda: now))
    return generate_latest(registry).decode()


def samples(text: str) -> str:
    return "".join(line + "\n" for line in text.splitlines()
                   if line and not line.startswith("#") and "_created" not in line)


def test_snapshot_renders_the_golden_exposition():
    assert samples(render(SNAPSHOT)) == GOLDEN


def test_every_poll_family_is_rendered_with_its_catalogue_help():
    text = render(SNAPSHOT)
    for spec in m.POLL:
        name = "celery_" + spec.name
        assert f"# TYPE {name} {spec.kind}" in text, name
        assert f"# HELP {name} {spec.help}" in text, name


def test_ages_grow_with_the_scrape_clock_between_rounds():
    later = samples(render(SNAPSHOT, now=T0 + 10))
    assert 'celery_task_oldest_running_seconds{name="examples.tasks.sleep"} 22.5' in later
    assert 'celery_queue_oldest_message_age_seconds{queue_name="a"} 50.0' in later
    assert "celery_jobmon_poll_age_seconds 12.5" in later


def test_unknown_oldest_message_age_is_absent_not_zero():
    assert 'oldest_message_age_seconds{queue_name="b"}' not in render(SNAPSHOT)


def test_nothing_is_rendered_before_the_first_round():
    assert samples(render(None)) == ""


def test_fifty_queues_render_fast():
    queues = tuple(QueueState(f"queue-{i}", {"0": i, "3": 1, "6": 2, "9": 3}, consumers=1,
                              waiting_since=T0 - i) for i in range(50))
    snapshot = PollSnapshot(taken_at=T0, duration=1.0, queues=queues)
    render(snapshot)  # warm-up: imports, first-call caches
    started = time.perf_counter()
    text = render(snapshot)
    elapsed = time.perf_counter() - started
    assert text.count("celery_queue_length{") == 200
    # The bound: a scrape with 50 queues renders in < 100 ms (it takes ~2 ms here).
    assert elapsed < 0.1, elapsed
