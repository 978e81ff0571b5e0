"""The poller's rounds with injected fakes: what it asks, what it keeps, what it publishes."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from exporter.metrics.collectors import PollCollector
from exporter.poll.poller import Poller
from exporter.poll.snapshot import QueueState, SentTime
from exporter.state.health import Health
from exporter.state.model import Model
from tests.support.clock import T0, FakeClock
from tests.support.waiting import wait_for


def task(task_id: str, name: str, queue: str, start: float | None = None) -> dict:
    return {"id": task_id, "name": name, "hostname": "x", "time_start": start,
            "delivery_info": {"exchange": "", "routing_key": queue, "priority": 0}}


def worker_replies(hostname: str, queue: str, start: float) -> dict[str, Any]:
    return {
        "active_queues": [{"name": queue, "exchange": {"name": queue}, "routing_key": queue}],
        "active": [task("r1", "sleep", queue, start)],
        "reserved": [task("p1", "add", queue), task("p2", "add", queue)],
        "scheduled": [{"eta": "2023-11-14T22:20:00+00:00", "priority": 6,
                       "request": task("s1", "add", queue)}],
        "stats": {"pool": {"max-concurrency": 4}, "rusage": {"utime": 1.5, "stime": 0.5,
                                                             "maxrss": 1000}},
        "registered": ["add", "sleep [rate_limit=10/s]"],
    }


class FakeBroadcaster:
    """Answers inspect calls from ``self.workers`` (hostname → replies by call)."""

    def __init__(self) -> None:
        self.workers: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, tuple[str, ...] | None]] = []
        self.fail: set[str] = set()
        self.silent: dict[str, set[str]] = {}  # call → hostnames that do not answer
        self.lock = threading.Lock()

    def enable_events(self) -> None:
        with self.lock:
            self.calls.append(("enable_events", None))
        if "enable_events" in self.fail:
            raise ConnectionError("broker gone")

    def inspect(self, call: str, destination: Sequence[str] | None) -> Mapping[str, Any] | None:
        with self.lock:
            self.calls.append((call, tuple(destination) if destination else None))
        if call in self.fail:
            raise ConnectionError("broker gone")
        silent = self.silent.get(call, set())
        reply = {h: r[call] for h, r in self.workers.items()
                 if h not in silent and (destination is None or h in destination)}
        return reply or None


class FakeQueueReader:
    def __init__(self, lengths: dict[str, int] | None = None, consumers: bool = False) -> None:
        self.lengths = lengths or {}
        self.consumers = consumers
        self.reads: list[list[str]] = []
        self.fail = False
        self.closed = 0

    def read(self, queues: Sequence[str], sent_time: SentTime | None = None
             ) -> dict[str, QueueState]:
        self.reads.append(list(queues))
        if self.fail:
            raise ConnectionError("redis gone")
        return {q: QueueState(q, {"0": self.lengths.get(q, 0), "3": 0},
                              consumers=1 if self.consumers else None,
                              waiting_since=T0 - 30 if sent_time else None)
                for q in queues}

    def close(self) -> None:
        self.closed += 1


@pytest.fixture
def model(clock: FakeClock) -> Model:
    return Model(runtime_buckets=(1.0,), queue_wait_buckets=(1.0,), max_tasks=100,
                 max_task_names=100, worker_timeout=30.0, worker_retention=3600.0, clock=clock)


@pytest.fixture
def broadcaster() -> FakeBroadcaster:
    fake = FakeBroadcaster()
    fake.workers["w1@h"] = worker_replies("w1@h", "a", T0 - 100)
    return fake


def make_poller(model: Model, broadcaster: FakeBroadcaster, reader: FakeQueueReader,
                clock: FakeClock, health: Health | None = None, **kwargs: Any) -> Poller:
    return Poller(None, model, health or Health(), interval=15.0, timeout=1.0,
                  enable_events=True,
                  broadcaster=broadcaster, queue_reader=reader, clock=clock, **kwargs)


def test_a_round_publishes_tasks_workers_and_queues(model, broadcaster, clock):
    reader = FakeQueueReader({"a": 5})
    poller = make_poller(model, broadcaster, reader, clock, queues=["configured"])
    assert poller.latest() is None
    snap = poller.poll_once()
    assert poller.latest() is snap
    assert snap.reserved == {("add", "a"): 2}
    assert snap.scheduled == {("add", "a"): 1}
    assert snap.earliest_eta == {"add": 1700000400.0}
    assert snap.oldest_running_start == {"sleep": T0 - 100}
    (worker,) = snap.workers
    assert (worker.hostname, worker.pool_size, worker.cpu_user, worker.cpu_system,
            worker.max_rss_bytes) == ("w1@h", 4, 1.5, 0.5, 1024000)
    # Redis gives no consumer count: the workers consuming the queue are counted instead.
    assert [(q.name, q.lengths["0"], q.consumers) for q in snap.queues] == [
        ("a", 5, 1), ("configured", 0, 0)]
    assert reader.reads == [["a", "configured"]]


def test_one_full_broadcast_then_calls_addressed_to_the_workers_that_answered(
        model, broadcaster, clock):
    broadcaster.workers["w2@h"] = worker_replies("w2@h", "b", T0)
    make_poller(model, broadcaster, FakeQueueReader(), clock).poll_once()
    assert broadcaster.calls == [
        ("enable_events", None), ("active_queues", None),
        ("active", ("w1@h", "w2@h")), ("reserved", ("w1@h", "w2@h")),
        ("scheduled", ("w1@h", "w2@h")), ("stats", ("w1@h", "w2@h")),
        ("registered", ("w1@h", "w2@h")),
    ]


def test_registered_names_are_asked_of_new_workers_and_every_tenth_round(
        model, broadcaster, clock):
    poller = make_poller(model, broadcaster, FakeQueueReader(), clock)

    def asked() -> list[tuple[str, ...] | None]:
        return [d for call, d in broadcaster.calls if call == "registered"]

    poller.poll_once()
    assert asked() == [("w1@h",)]
    for _ in range(8):
        poller.poll_once()
    assert asked() == [("w1@h",)]  # rounds 2-9: nothing new
    broadcaster.workers["w2@h"] = worker_replies("w2@h", "b", T0)
    poller.poll_once()  # round 10, and a new worker
    poller.poll_once()
    assert asked() == [("w1@h",), ("w1@h", "w2@h")]


def test_the_model_learns_which_queues_each_worker_consumes(model, broadcaster, clock):
    make_poller(model, broadcaster, FakeQueueReader(), clock).poll_once()
    # A task-received without task-sent now counts under the worker's only queue.
    model.process_many([{"type": "task-received", "uuid": "t1", "name": "add",
                         "hostname": "w1@h", "timestamp": T0}])
    assert model.snapshot().lifecycle["task-received"] == {("add", "a"): 1}


def test_a_silent_worker_keeps_its_values_one_round_and_counts_a_timeout(
        model, broadcaster, clock):
    poller = make_poller(model, broadcaster, FakeQueueReader(), clock)
    poller.poll_once()
    broadcaster.silent = {call: {"w1@h"} for call in
                          ("active_queues", "active", "reserved", "scheduled", "stats")}
    clock.now += 15
    kept = poller.poll_once()
    assert kept.reserved == {("add", "a"): 2}
    assert [w.pool_size for w in kept.workers] == [4]
    assert [q.name for q in kept.queues] == ["a"]
    assert kept.inspect_timeouts == {"w1@h": 1}
    clock.now += 15
    dropped = poller.poll_once()
    assert (dropped.reserved, dropped.workers, dropped.oldest_running_start) == ({}, (), {})
    assert dropped.inspect_timeouts == {"w1@h": 2}


def test_a_worker_missing_from_one_call_only_keeps_that_calls_values(model, broadcaster, clock):
    poller = make_poller(model, broadcaster, FakeQueueReader(), clock)
    poller.poll_once()
    broadcaster.workers["w1@h"]["stats"] = {"pool": {"max-concurrency": 8}}
    broadcaster.silent = {"stats": {"w1@h"}}
    snap = poller.poll_once()
    assert [w.pool_size for w in snap.workers] == [4]
    assert snap.inspect_timeouts == {"w1@h": 1}
    broadcaster.silent = {}
    assert [w.pool_size for w in poller.poll_once().workers] == [8]


def test_a_worker_is_forgotten_by_the_timeout_counter(model, broadcaster, clock):
    poller = make_poller(model, broadcaster, FakeQueueReader(), clock, worker_forget_after=60)
    poller.poll_once()
    broadcaster.workers.clear()
    clock.now += 30
    assert poller.poll_once().inspect_timeouts == {"w1@h": 1}
    clock.now += 31
    assert poller.poll_once().inspect_timeouts == {}


def test_failed_calls_are_counted_in_the_health_and_values_carried(model, broadcaster, clock):
    health = Health()
    poller = make_poller(model, broadcaster, FakeQueueReader(), clock, health)
    poller.poll_once()
    broadcaster.fail = {"active_queues", "enable_events"}
    snap = poller.poll_once()
    # Workers are unknown this round: nothing else is asked, values are carried, no timeout.
    assert broadcaster.calls[-2:] == [("enable_events", None), ("active_queues", None)]
    assert snap.reserved == {("add", "a"): 2}
    assert snap.inspect_timeouts == {}
    assert health.snapshot().poll_errors == {"active_queues": 1, "enable_events": 1}


def test_failed_queue_reads_keep_the_last_lengths_stale_and_reconnect(model, broadcaster, clock):
    # Before: kept one round, then dropped (every celery_queue_length series went away).
    reader = FakeQueueReader({"a": 5})
    health = Health()
    poller = make_poller(model, broadcaster, reader, clock, health)
    read_at = clock.now
    assert poller.poll_once().queues_read_at == read_at
    reader.fail = True
    for _ in range(3):
        clock.now += 10
        snapshot = poller.poll_once()
        assert [q.lengths["0"] for q in snapshot.queues] == [5]
        assert snapshot.queues_read_at == read_at
    assert reader.closed == 3
    assert health.snapshot().poll_errors == {"queue_lengths": 3}
    reader.fail = False
    clock.now += 10
    assert poller.poll_once().queues_read_at == clock.now


def test_a_queue_nobody_consumes_any_more_is_forgotten_unless_configured(
        model, broadcaster, clock):
    reader = FakeQueueReader()
    poller = make_poller(model, broadcaster, reader, clock, queues=["keep"],
                         queue_forget_after=600)
    poller.poll_once()
    broadcaster.workers["w1@h"]["active_queues"] = [{"name": "b", "exchange": {"name": "b"},
                                                     "routing_key": "b"}]
    clock.now += 300
    assert [q.name for q in poller.poll_once().queues] == ["a", "b", "keep"]
    clock.now += 301
    assert [q.name for q in poller.poll_once().queues] == ["b", "keep"]


def test_broker_consumer_counts_win_over_worker_counts(model, broadcaster, clock):
    snap = make_poller(model, broadcaster, FakeQueueReader(consumers=True), clock,
                       queues=["idle"]).poll_once()
    assert {q.name: q.consumers for q in snap.queues} == {"a": 1, "idle": 1}


def test_without_enable_events_no_enable_broadcast(model, broadcaster, clock):
    poller = Poller(None, model, Health(), interval=15.0, timeout=1.0, enable_events=False,
                    broadcaster=broadcaster, queue_reader=FakeQueueReader(), clock=clock)
    poller.poll_once()
    assert ("enable_events", None) not in broadcaster.calls


def test_scrapes_never_call_the_broker_or_the_workers(model, broadcaster, clock):
    reader = FakeQueueReader({"a": 5})
    poller = make_poller(model, broadcaster, reader, clock, sent_time=lambda task_id: T0)
    poller.poll_once()
    calls, reads = list(broadcaster.calls), list(reader.reads)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PollCollector(poller.latest, "celery_", clock))
    outputs: list[bytes] = []
    threads = [threading.Thread(target=lambda: outputs.append(generate_latest(registry)))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(outputs) == 2 and outputs[0] == outputs[1]
    assert b'celery_queue_length{priority="0",queue_name="a"} 5.0' in outputs[0]
    assert (broadcaster.calls, reader.reads) == (calls, reads)


def test_the_thread_polls_until_stopped(model, broadcaster):
    poller = Poller(None, model, Health(), interval=0.05, timeout=1.0, enable_events=False,
                    broadcaster=broadcaster, queue_reader=FakeQueueReader())
    poller.start()
    wait_for(lambda: sum(c == "active_queues" for c, _ in broadcaster.calls) >= 2, 5,
             interval=0.01, message="two rounds")
    poller.stop()
    assert not poller.is_alive()
    assert poller.latest() is not None


def test_a_call_failing_every_round_is_logged_once_per_interval(model, broadcaster, clock,
                                                                 caplog):
    # Before: one WARNING per round and call (every 15 s, for as long as it lasts).
    poller = make_poller(model, broadcaster, FakeQueueReader(), clock)
    broadcaster.fail = {"active_queues"}
    with caplog.at_level("WARNING", logger="exporter.poll.poller"):
        for _ in range(4):
            poller.poll_once()
    failed = [r.getMessage() for r in caplog.records if "poll call failed" in r.getMessage()]
    assert len(failed) == 1 and failed[0].startswith("poll call failed call=active_queues")
