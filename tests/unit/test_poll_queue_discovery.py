"""Which queues the poller reads and shows: found on the broker (Redis bindings, the RabbitMQ
management API) and in task-sent events, kept while they hold messages, forgotten when empty
and unconsumed for --queue-forget-after.

Before, a queue was read only while a worker consumed it (or with --queue) and for
--queue-forget-after after: its backlog vanished from /metrics, and a queue nobody consumed
when the exporter started was never shown.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.error import HTTPError

import pytest

from exporter.config import Settings
from exporter.history import UnfinishedTask
from exporter.poll.amqp_queues import AmqpQueueReader
from exporter.poll.poller import QUEUE_DISCOVERY_INTERVAL, Poller
from exporter.poll.queue_tracker import QueueTracker, is_celery_internal
from exporter.poll.rabbitmq_management import ManagementApi, parse_queue_names, queues_endpoint
from exporter.poll.redis_queues import RedisQueueLayout
from exporter.poll.snapshot import QueueState, SentTime
from exporter.state.health import Health
from exporter.state.model import MAX_SENT_QUEUES, Model
from tests.support.clock import T0, FakeClock
from tests.support.events import Events

SEP = "\x06\x16"


def state(name: str, waiting: int) -> QueueState:
    return QueueState(name, {"0": waiting, "3": 0})


# -- QueueTracker ----------------------------------------------------------------------------

def test_a_queue_holding_messages_is_never_forgotten():
    tracker = QueueTracker((), forget_after=600)
    assert tracker.to_read(T0, ["a"], ()) == ["a"]
    assert tracker.to_show(T0, {"a": state("a", 0)}) == ["a"]
    # Its last worker went away; messages keep arriving, for far longer than forget_after.
    for hours in range(1, 25):
        now = T0 + hours * 3600
        assert tracker.to_read(now, [], ()) == ["a"]
        assert tracker.to_show(now, {"a": state("a", hours)}) == ["a"]


def test_an_empty_queue_nobody_consumes_is_forgotten_after_forget_after():
    tracker = QueueTracker((), forget_after=600)
    tracker.to_read(T0, ["a"], ())
    assert tracker.to_show(T0 + 600, {"a": state("a", 0)}) == ["a"]
    assert tracker.to_show(T0 + 601, {"a": state("a", 0)}) == []
    assert tracker.to_read(T0 + 602, [], ()) == []


def test_a_drained_backlog_is_forgotten_forget_after_its_last_message():
    tracker = QueueTracker((), forget_after=600)
    tracker.to_show(T0, {"a": state("a", 3)})
    assert tracker.to_show(T0 + 500, {"a": state("a", 0)}) == ["a"]
    assert tracker.to_show(T0 + 601, {"a": state("a", 0)}) == []


def test_a_found_queue_is_read_and_shown_only_once_it_holds_messages():
    tracker = QueueTracker((), forget_after=600)
    assert tracker.to_read(T0, [], ["orphan", "empty"]) == ["empty", "orphan"]
    assert tracker.to_show(T0, {"orphan": state("orphan", 4), "empty": state("empty", 0)}
                           ) == ["orphan"]
    # Found again next round, still empty: read, not shown.
    assert tracker.to_read(T0 + 15, [], ["orphan", "empty"]) == ["empty", "orphan"]
    assert tracker.to_show(T0 + 15, {"orphan": state("orphan", 4),
                                     "empty": state("empty", 0)}) == ["orphan"]


def test_configured_queues_are_always_read_and_shown_even_empty():
    tracker = QueueTracker(["keep", "keep"], forget_after=0)
    assert tracker.to_read(T0, [], ()) == ["keep"]
    assert tracker.to_show(T0 + 10_000, {"keep": state("keep", 0)}) == ["keep"]


def test_a_forget_after_of_zero_still_keeps_a_backlog():
    tracker = QueueTracker((), forget_after=0)
    tracker.to_read(T0, ["a"], ())
    assert tracker.to_show(T0 + 1, {"a": state("a", 2)}) == ["a"]
    assert tracker.to_read(T0 + 2, [], ()) == ["a"]
    assert tracker.to_show(T0 + 2, {"a": state("a", 2)}) == ["a"]
    assert tracker.to_show(T0 + 3, {"a": state("a", 0)}) == []


@pytest.mark.parametrize("name", [
    "celeryev", "celeryev.5b1c2f0e-1f7a-4c3e-9d55-0b7f0f1d2a3b", "w1@host.celery.pidbox",
    "c0ffee00-aaaa-bbbb-cccc-0123456789ab.reply.celery.pidbox", "reply.celery.pidbox",
])
def test_celerys_own_queues_are_internal(name):
    assert is_celery_internal(name)


@pytest.mark.parametrize("name", ["celery", "a", "celeryevents", "w1@host.dq2", "pidbox"])
def test_task_queues_are_not_internal(name):
    assert not is_celery_internal(name)


def test_found_celery_queues_are_never_read():
    tracker = QueueTracker((), forget_after=600)
    assert tracker.to_read(T0, [], ["w1@h.celery.pidbox", "celeryev.x", "", "a"]) == ["a"]


# -- Redis bindings --------------------------------------------------------------------------

def test_binding_members_name_their_queue():
    layout = RedisQueueLayout()
    assert layout.bound_queue(f"a{SEP}{SEP}a".encode()) == "a"
    assert layout.bound_queue(f"{SEP}{SEP}w1@h.celery.pidbox") == "w1@h.celery.pidbox"
    assert layout.bound_queue(f"rk{SEP}pattern.*{SEP}q") == "q"
    assert layout.bound_queue(f"a{SEP}{SEP}") is None
    assert layout.bound_queue(b"no separator") is None


def test_a_routing_key_holding_the_separator_still_names_its_queue():
    layout = RedisQueueLayout(sep=":")
    assert layout.bound_queue("rk:with:colons::q") == "q"


@pytest.mark.parametrize("prefix, pattern", [
    ("", "_kombu.binding.*"),
    ("app1:", "app1:_kombu.binding.*"),
    ("we[ir]d*?", "we\\[ir\\]d\\*\\?_kombu.binding.*"),
])
def test_the_binding_scan_pattern_includes_the_global_keyprefix(prefix, pattern):
    assert RedisQueueLayout(global_keyprefix=prefix).binding_pattern == pattern


def test_the_layout_takes_the_binding_prefix_from_the_kombu_channel():
    class Channel:
        sep = SEP
        priority_steps = [0, 3, 6, 9]
        global_keyprefix = "app1:"
        keyprefix_queue = "_kombu.binding.%s"

    layout = RedisQueueLayout.from_channel(Channel())
    assert layout.binding_pattern == "app1:_kombu.binding.*"


# -- RabbitMQ management API -----------------------------------------------------------------

@pytest.mark.parametrize("url, vhost, expected", [
    ("http://rabbitmq:15672", "/",
     ("http://rabbitmq:15672/api/queues/%2F?columns=name", None, None)),
    ("https://mon:p%40ss@rabbitmq/rabbitmq/", "prod/eu",
     ("https://rabbitmq/rabbitmq/api/queues/prod%2Feu?columns=name",
      "mon", "p@ss")),
    ("http://[::1]:15672", "v",
     ("http://[::1]:15672/api/queues/v?columns=name", None, None)),
])
def test_the_queue_list_url_has_the_vhost_quoted_and_no_credentials(url, vhost, expected):
    assert queues_endpoint(url, vhost) == expected


@pytest.mark.parametrize("url", ["amqp://h:5672", "rabbitmq:15672", "http://", "http://h:port"])
def test_a_management_url_that_is_not_http_is_refused(url):
    with pytest.raises(ValueError):
        queues_endpoint(url, "/")


def test_queue_list_answers_are_parsed_leniently():
    payload = [{"name": "a"}, {"name": "b", "messages_ready": 3}, {"name": 7}, {"vhost": "/"},
               "junk"]
    assert parse_queue_names(payload) == {"a", "b"}
    with pytest.raises(ValueError):
        parse_queue_names({"error": "not_found"})


class _Api(BaseHTTPRequestHandler):
    answers: dict[str, tuple[int, Any]] = {}
    seen: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.seen.append((self.path, self.headers.get("Authorization")))
        status, body = self.answers.get(self.path, (404, {"error": "Object Not Found"}))
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def api_server() -> Iterator[tuple[str, type[_Api]]]:
    _Api.answers, _Api.seen = {}, []
    server = HTTPServer(("127.0.0.1", 0), _Api)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Api
    server.shutdown()
    server.server_close()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_the_management_api_uses_the_brokers_credentials_unless_the_url_has_some(api_server):
    url, api = api_server
    path = "/api/queues/prod?columns=name"
    api.answers[path] = (200, [{"name": "orphan"}])
    assert ManagementApi(url, "prod", "broker-user", "broker-pw").queue_names() == {"orphan"}
    host = url.removeprefix("http://")
    assert ManagementApi(f"http://mon:m%40n@{host}", "prod", "broker-user", "broker-pw"
                         ).queue_names() == {"orphan"}
    assert api.seen == [(path, basic("broker-user", "broker-pw")), (path, basic("mon", "m@n"))]


def test_a_refusal_of_the_management_api_raises_for_the_poller_to_count(api_server):
    url, api = api_server
    api.answers["/api/queues/v?columns=name"] = (
        401, {"error": "not_authorised"})
    with pytest.raises(HTTPError) as refused:
        ManagementApi(url, "v", "guest", "wrong").queue_names()
    assert refused.value.code == 401


def test_an_amqp_reader_finds_nothing_without_the_management_api():
    assert AmqpQueueReader(connection=None).find_queues() == set()  # type: ignore[arg-type]


def test_an_amqp_reader_finds_the_vhosts_queues_through_the_management_api(api_server):
    url, api = api_server
    api.answers["/api/queues/%2F?columns=name"] = (200, [{"name": "orphan"}, {"name": "idle"}])
    reader = AmqpQueueReader(connection=None,  # type: ignore[arg-type]
                             management=ManagementApi(url, "/", "guest", "guest"))
    assert reader.find_queues() == {"orphan", "idle"}


# -- settings --------------------------------------------------------------------------------

def test_the_management_url_password_is_a_secret():
    settings = Settings(broker_url="amqp://guest:brokerpw@h//",
                        rabbitmq_management_url="http://mon:mgmt-secret@h:15672")
    assert settings.secrets() == {"brokerpw", "mgmt-secret"}


def test_a_management_url_that_is_not_http_is_a_problem_that_does_not_repeat_it():
    settings = Settings(rabbitmq_management_url="amqp://mon:mgmt-secret@h:15672")
    assert settings.problems() == [
        "--rabbitmq-management-url: an http:// or https:// URL such as http://rabbitmq:15672 "
        "(credentials: the broker's unless given)"]


# -- the model's queue names from task-sent --------------------------------------------------

def test_task_sent_routing_names_queues_for_the_poller(model: Model, ev: Events):
    model.process_many([
        ev.sent("t1", T0, "add", queue="a"),
        ev.sent("t2", T0, "add", queue=None, routing_key="by-key"),
        ev.sent("t3", T0, "add", queue="b"),
        ev.sent("t4", T0, "add", queue="a"),
        ev.received("t5", T0, "add"),
    ], received_at=T0)
    assert model.sent_queues() == ("by-key", "b", "a")


def test_the_warmed_history_names_queues_for_the_poller(model: Model):
    model.warm([UnfinishedTask("t1", "add", "orphan", "orphan", None, "PENDING", T0 - 60, None,
                               None, None, 0),
                UnfinishedTask("t2", "add", None, None, None, "PENDING", T0 - 60, None, None,
                               None, 0)])
    assert model.sent_queues() == ("orphan",)


def test_the_model_keeps_the_most_recent_queue_names(model: Model, ev: Events):
    model.process_many([ev.sent(f"t{i}", T0, "add", queue=f"q{i}")
                        for i in range(MAX_SENT_QUEUES + 2)], received_at=T0)
    names = model.sent_queues()
    assert len(names) == MAX_SENT_QUEUES
    assert names[0] == "q2" and names[-1] == f"q{MAX_SENT_QUEUES + 1}"


# -- the poller ------------------------------------------------------------------------------

class NoBroadcast:
    def enable_events(self) -> None:
        pass

    def inspect(self, call: str, destination: Sequence[str] | None) -> Mapping[str, Any] | None:
        return None


class FindingReader:
    """A queue reader whose broker holds ``waiting`` and lists ``bound`` queues."""

    def __init__(self, waiting: dict[str, int], bound: set[str]) -> None:
        self.waiting = waiting
        self.bound = bound
        self.finds = 0
        self.reads: list[list[str]] = []
        self.find_fails = False

    def find_queues(self) -> set[str]:
        self.finds += 1
        if self.find_fails:
            raise ConnectionError("redis gone")
        return set(self.bound)

    def read(self, queues: Sequence[str], sent_time: SentTime | None = None
             ) -> dict[str, QueueState]:
        self.reads.append(list(queues))
        return {q: state(q, self.waiting.get(q, 0)) for q in queues}

    def close(self) -> None:
        pass


def make_poller(model: Model, reader: FindingReader, clock: FakeClock,
                health: Health | None = None) -> Poller:
    return Poller(None, model, health or Health(), interval=15.0, timeout=1.0,
                  enable_events=False, queue_forget_after=600, broadcaster=NoBroadcast(),
                  queue_reader=reader, clock=clock)


def test_an_exporter_started_during_an_outage_shows_the_backlog_the_broker_lists(
        model, clock):
    reader = FindingReader({"orphan": 4}, {"orphan", "idle", "w1@h.celery.pidbox"})
    snapshot = make_poller(model, reader, clock).poll_once()
    assert snapshot.queues == (QueueState("orphan", {"0": 4, "3": 0}, consumers=0),)
    assert reader.reads == [["idle", "orphan"]]


def test_the_broker_is_asked_for_its_queues_once_per_discovery_interval(model, clock):
    reader = FindingReader({"orphan": 1}, {"orphan"})
    poller = make_poller(model, reader, clock)
    poller.poll_once()
    reader.bound = {"orphan", "later"}
    reader.waiting["later"] = 2
    clock.now += QUEUE_DISCOVERY_INTERVAL - 1
    assert [q.name for q in poller.poll_once().queues] == ["orphan"]
    clock.now += 1
    assert [q.name for q in poller.poll_once().queues] == ["later", "orphan"]
    assert reader.finds == 2


def test_a_failed_discovery_is_counted_and_retried_next_round(model, clock):
    health = Health()
    reader = FindingReader({"orphan": 1}, {"orphan"})
    reader.find_fails = True
    poller = make_poller(model, reader, clock, health)
    assert poller.poll_once().queues == ()
    reader.find_fails = False
    clock.now += 15
    assert [q.name for q in poller.poll_once().queues] == ["orphan"]
    assert health.snapshot().poll_errors == {"queue_discovery": 1}


def test_queues_named_by_task_sent_are_read(model, clock, ev):
    reader = FindingReader({"routed": 3}, set())
    model.process_many([ev.sent("t1", T0, "add", queue="routed")], received_at=T0)
    snapshot = make_poller(model, reader, clock).poll_once()
    assert snapshot.queues == (QueueState("routed", {"0": 3, "3": 0}, consumers=0),)
