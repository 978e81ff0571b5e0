"""Inspect replies → dataclasses, fed with replies recorded from a real Celery 5.7 worker.

Recorded with ``celery -A examples.tasks worker -E -Q recq -c 1 -n rec@%h`` on Redis, after
``sleep.apply_async((8,), queue="recq", priority=3)``, ``sleep.apply_async((1,), ...,
priority=5)`` and ``add.apply_async((1, 2), queue="recq", countdown=60, priority=9)``.
"""

from __future__ import annotations

from datetime import datetime

from exporter.poll.inspect_replies import (
    ConsumedQueue,
    ScheduledTask,
    TaskInfo,
    WorkerStats,
    parse_active_queues,
    parse_scheduled,
    parse_stats,
    parse_task_info,
    parse_tasks,
    queue_of,
)

ACTIVE_SAFE = {
    "rec@vm": [
        {
            "id": "afc5f994-098c-43ce-847e-c2a9f39cb386",
            "name": "examples.tasks.sleep",
            "args": "(8,)",
            "kwargs": "{}",
            "type": "examples.tasks.sleep",
            "hostname": "rec@vm",
            "time_start": 1795943348.0050714,
            "acknowledged": True,
            "delivery_info": {"exchange": "", "routing_key": "recq", "priority": 3,
                              "redelivered": False},
            "worker_pid": 10795,
        }
    ]
}
RESERVED = {
    "rec@vm": [
        {
            "id": "ac226ac5-db15-4422-8447-4c5796165d24",
            "name": "examples.tasks.sleep",
            "args": [1],
            "kwargs": {},
            "type": "examples.tasks.sleep",
            "hostname": "rec@vm",
            "time_start": None,
            "acknowledged": False,
            "delivery_info": {"exchange": "", "routing_key": "recq", "priority": 5,
                              "redelivered": False},
            "worker_pid": None,
        }
    ]
}
SCHEDULED = {
    "rec@vm": [
        {
            "eta": "2026-11-29T09:10:08.003996+00:00",
            "priority": 6,
            "request": {
                "id": "13cd16bc-6472-4cda-a495-ead133acca29",
                "name": "examples.tasks.add",
                "args": [1, 2],
                "kwargs": {},
                "type": "examples.tasks.add",
                "hostname": "rec@vm",
                "time_start": None,
                "acknowledged": False,
                "delivery_info": {"exchange": "", "routing_key": "recq", "priority": 9,
                                  "redelivered": False},
                "worker_pid": None,
            },
        }
    ]
}
STATS = {
    "rec@vm": {
        "total": {"examples.tasks.sleep": 1},
        "pid": 10752,
        "clock": "13",
        "uptime": 9,
        "pool": {
            "implementation": "celery.concurrency.prefork:TaskPool",
            "max-concurrency": 1,
            "processes": [10795],
            "max-tasks-per-child": "N/A",
            "put-guarded-by-semaphore": False,
            "timeouts": [0, 0],
            "writes": {"total": 1, "avg": "1.00", "all": "1.00", "raw": "1", "strategy": "fair",
                       "inqueues": {"total": 1, "active": 0}},
        },
        "broker": {"hostname": "127.0.0.1", "userid": None, "virtual_host": "12", "port": 6379,
                   "insist": False, "ssl": False, "transport": "redis", "connect_timeout": 4,
                   "transport_options": {}, "login_method": None, "uri_prefix": None,
                   "heartbeat": 120.0, "failover_strategy": "round-robin", "alternates": [],
                   "credential_provider": None},
        "prefetch_count": 5,
        "rusage": {"utime": 0.310965, "stime": 0.030712999999999997, "maxrss": 54408,
                   "ixrss": 0, "idrss": 0, "isrss": 0, "minflt": 15664, "majflt": 2,
                   "nswap": 0, "inblock": 632, "oublock": 32, "msgsnd": 0, "msgrcv": 0,
                   "nsignals": 0, "nvcsw": 109, "nivcsw": 83},
    }
}
ACTIVE_QUEUES = {
    "rec@vm": [
        {
            "name": "recq",
            "exchange": {"name": "recq", "type": "direct", "arguments": None, "durable": True,
                         "passive": False, "auto_delete": False, "delivery_mode": None,
                         "no_declare": False},
            "routing_key": "recq",
            "queue_arguments": None,
            "binding_arguments": None,
            "consumer_arguments": None,
            "durable": True,
            "exclusive": False,
            "auto_delete": False,
            "no_ack": False,
            "alias": None,
            "bindings": [],
            "no_declare": None,
            "expires": None,
            "message_ttl": None,
            "max_length": None,
            "max_length_bytes": None,
            "max_priority": None,
        }
    ]
}


def test_active_reply_gives_task_start_time_routing_and_priority():
    assert parse_tasks(ACTIVE_SAFE) == {"rec@vm": (TaskInfo(
        task_id="afc5f994-098c-43ce-847e-c2a9f39cb386", name="examples.tasks.sleep",
        hostname="rec@vm", time_start=1795943348.0050714, exchange="", routing_key="recq",
        priority=3),)}


def test_reserved_reply_has_no_start_time():
    (info,) = parse_tasks(RESERVED)["rec@vm"]
    assert (info.task_id, info.time_start, info.priority) == (
        "ac226ac5-db15-4422-8447-4c5796165d24", None, 5)


def test_scheduled_reply_gives_eta_and_message_priority_not_timer_priority():
    (entry,) = parse_scheduled(SCHEDULED)["rec@vm"]
    assert entry == ScheduledTask(
        eta=datetime.fromisoformat("2026-11-29T09:10:08.003996+00:00").timestamp(),
        request=TaskInfo(task_id="13cd16bc-6472-4cda-a495-ead133acca29",
                         name="examples.tasks.add", hostname="rec@vm", time_start=None,
                         exchange="", routing_key="recq", priority=9),
    )


def test_stats_reply_gives_pool_size_cpu_seconds_and_max_rss_in_bytes():
    assert parse_stats(STATS) == {"rec@vm": WorkerStats(
        pool_size=1, processes=(10795,), cpu_user=0.310965, cpu_system=0.030712999999999997,
        max_rss_bytes=54408 * 1024, pool="prefork")}


def test_pool_implementation_becomes_the_pool_name():
    # pool.implementation of each of Celery's pools (BasePool._get_info), and a custom one.
    names = {f"w{i}@h": {"pool": {"implementation": implementation}} for i, implementation
             in enumerate(["celery.concurrency.thread:TaskPool",
                           "celery.concurrency.solo:TaskPool",
                           "celery.concurrency.gevent:TaskPool", "mypools.fast:Pool", 7])}
    assert {h: s.pool for h, s in parse_stats(names).items()} == {
        "w0@h": "threads", "w1@h": "solo", "w2@h": "gevent", "w3@h": "mypools.fast:Pool",
        "w4@h": None}


def test_max_rss_of_a_macos_worker_is_already_in_bytes():
    assert parse_stats(STATS, maxrss_scale=1)["rec@vm"].max_rss_bytes == 54408


def test_pool_size_falls_back_to_the_number_of_processes():
    stats = {"w@h": {"pool": {"processes": [1, 2, 3]}, "rusage": {}}}
    assert parse_stats(stats)["w@h"] == WorkerStats(3, (1, 2, 3), None, None, None)


def test_solo_pool_without_pool_details_has_no_size():
    assert parse_stats({"w@h": {"pool": {}}})["w@h"].pool_size is None


def test_active_queues_reply_gives_queue_and_binding():
    assert parse_active_queues(ACTIVE_QUEUES) == {
        "rec@vm": (ConsumedQueue("recq", "recq", "recq"),)}


def test_no_reply_at_all_is_an_empty_mapping():
    for parse in (parse_tasks, parse_scheduled, parse_stats, parse_active_queues):
        assert parse(None) == {}


def test_a_worker_answering_an_error_counts_as_not_answering():
    reply = {"w@h": {"error": "No such command"}, **ACTIVE_SAFE}
    assert set(parse_tasks(reply)) == {"rec@vm"}
    assert parse_stats({"w@h": ["not", "a", "dict"]}) == {}


def test_malformed_entries_are_left_out_and_missing_fields_are_none():
    reply = {"w@h": [None, {"name": "no id"}, {"id": "t1"},
                     {"id": "t2", "name": 5, "time_start": "soon", "delivery_info": "x"}]}
    assert parse_tasks(reply) == {"w@h": (
        TaskInfo("t1", "unknown", "w@h", None, None, None, None),
        TaskInfo("t2", "unknown", "w@h", None, None, None, None),
    )}
    assert parse_scheduled({"w@h": [{"eta": "garbage", "request": {"id": "t3"}}, {}]}) == {
        "w@h": (ScheduledTask(None, TaskInfo("t3", "unknown", "w@h", None, None, None, None)),)}


def test_booleans_are_not_numbers():
    info = parse_task_info({"id": "t", "time_start": True,
                            "delivery_info": {"priority": False}}, "w@h")
    assert info is not None and (info.time_start, info.priority) == (None, None)


def test_an_integer_beyond_the_float_range_is_no_number():
    # math.isfinite(2**1100) raises OverflowError: the reply of one worker must not end the
    # poll round.
    info = parse_task_info({"id": "t", "time_start": 2**1100}, "w@h")
    stats = parse_stats({"w@h": {"rusage": {"utime": 2**1100, "stime": 1.5}}})
    assert info is not None and info.time_start is None
    assert (stats["w@h"].cpu_user, stats["w@h"].cpu_system) == (None, 1.5)


QUEUES = (ConsumedQueue("a", "a", "a"), ConsumedQueue("b", "tasks", "b.#"),
          ConsumedQueue("c", "tasks", "c"))


def task(exchange: str | None, routing_key: str | None) -> TaskInfo:
    return TaskInfo("t", "n", "w@h", None, exchange, routing_key, None)


def test_default_exchange_delivers_to_the_queue_named_by_the_routing_key():
    assert queue_of(task("", "recq"), ()) == "recq"


def test_named_exchange_resolves_through_the_workers_bindings():
    assert queue_of(task("tasks", "c"), QUEUES) == "c"


def test_a_worker_with_one_queue_names_it():
    assert queue_of(task("other", "x"), (ConsumedQueue("only", "only", "only"),)) == "only"


def test_an_ambiguous_delivery_is_unknown_never_a_guess():
    assert queue_of(task("tasks", "b.x"), QUEUES) == "unknown"
    assert queue_of(task(None, None), QUEUES) == "unknown"


#: ``inspect scheduled`` recorded from a Celery 5.7 worker on RabbitMQ 3.10
#: (``celery -A app worker -E -Q recq -c 1 -n rec@vm``) after ``add.apply_async((1, 2),
#: queue="recq", countdown=600, priority=9)`` and ``rabbitmqctl close_connection`` of the
#: worker's connections: the unacknowledged message came back redelivered and the worker holds
#: the same task twice in its timer.
SCHEDULED_REDELIVERED = {
    "rec@vm": [
        {"eta": "2026-12-03T11:59:53.260106+00:00", "priority": 6, "request": {
            "id": "c50cf81a-39f7-40d7-997d-c2dae545020f", "name": "examples.tasks.add",
            "args": [1, 2], "kwargs": {}, "type": "examples.tasks.add", "hostname": "rec@vm",
            "time_start": None, "acknowledged": False,
            "delivery_info": {"exchange": "", "routing_key": "recq", "priority": 9,
                              "redelivered": True},
            "worker_pid": None}},
        {"eta": "2026-12-03T11:59:53.260106+00:00", "priority": 6, "request": {
            "id": "c50cf81a-39f7-40d7-997d-c2dae545020f", "name": "examples.tasks.add",
            "args": [1, 2], "kwargs": {}, "type": "examples.tasks.add", "hostname": "rec@vm",
            "time_start": None, "acknowledged": False,
            "delivery_info": {"exchange": "", "routing_key": "recq", "priority": 9,
                              "redelivered": False},
            "worker_pid": None}},
    ]
}


def test_a_task_a_worker_holds_twice_after_a_redelivery_is_listed_once():
    (entry,) = parse_scheduled(SCHEDULED_REDELIVERED)["rec@vm"]
    assert entry == ScheduledTask(
        eta=datetime.fromisoformat("2026-12-03T11:59:53.260106+00:00").timestamp(),
        request=TaskInfo("c50cf81a-39f7-40d7-997d-c2dae545020f", "examples.tasks.add",
                         "rec@vm", None, "", "recq", 9))


def test_an_active_or_reserved_task_id_listed_twice_is_listed_once():
    (entry,) = RESERVED["rec@vm"]
    twice = {"rec@vm": [entry, {**entry, "delivery_info": {**entry["delivery_info"],
                                                           "redelivered": True}}]}
    assert parse_tasks(twice) == parse_tasks(RESERVED)
    assert len(parse_tasks(twice)["rec@vm"]) == 1
