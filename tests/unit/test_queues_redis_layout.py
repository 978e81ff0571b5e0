"""Redis queue layout and message parsing: pure functions, checked against kombu itself."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from kombu.transport.redis import Channel

from exporter.poll.redis_queues import (
    PendingMessage,
    RedisQueueLayout,
    RedisQueueReading,
    page_ranges,
    parse_message,
    to_queue_state,
    waiting_since,
)

#: A message as kombu stored it in Redis (recorded: ``add.apply_async((1, 2), queue="peekq",
#: priority=5, countdown=30)``), ``LRANGE 'peekq\x06\x163' 0 -1``.
RECORDED = json.dumps({
    "body": "W1sxLCAyXSwge30sIHsiY2FsbGJhY2tzIjogbnVsbCwgImVycmJhY2tzIjogbnVsbCwgImNoYWluIjogbn"
            "VsbCwgImNob3JkIjogbnVsbH1d",
    "content-encoding": "utf-8",
    "content-type": "application/json",
    "headers": {
        "lang": "py", "task": "examples.tasks.add", "id": "6ad6fb55-4463-4fd4-bf4d-e76e2686b497",
        "shadow": None, "eta": "2026-11-29T09:09:54.536288+00:00", "expires": None,
        "group": None, "group_index": None, "retries": 0, "timelimit": [None, None],
        "root_id": "6ad6fb55-4463-4fd4-bf4d-e76e2686b497", "parent_id": None,
        "argsrepr": "(1, 2)", "kwargsrepr": "{}", "origin": "gen11125@vm",
        "ignore_result": False, "replaced_task_nesting": 0, "stamped_headers": None,
        "stamps": {},
    },
    "properties": {
        "correlation_id": "6ad6fb55-4463-4fd4-bf4d-e76e2686b497",
        "reply_to": "cca6fa5d-9db1-3953-bd03-76fe1f7aec66", "delivery_mode": 2,
        "delivery_info": {"exchange": "", "routing_key": "peekq"}, "priority": 5,
        "body_encoding": "base64", "delivery_tag": "b57a2f0d-d58a-4773-b96b-371a23bb4c79",
    },
}).encode()
ETA = datetime.fromisoformat("2026-11-29T09:09:54.536288+00:00").timestamp()


class KombuChannel:
    """kombu's own key and priority functions, without a connection."""

    def __init__(self, sep: str = "\x06\x16", steps: list[int] | None = None) -> None:
        self.sep = sep
        self.priority_steps = steps or [0, 3, 6, 9]

    priority = Channel.priority
    _q_for_pri = Channel._q_for_pri


def test_default_layout_matches_kombu_keys():
    layout = RedisQueueLayout()
    assert [layout.key("a", s) for s in layout.steps] == [
        "a", "a\x06\x163", "a\x06\x166", "a\x06\x169"]
    kombu = KombuChannel()
    assert [layout.key("a", s) for s in layout.steps] == [
        kombu._q_for_pri("a", s) for s in kombu.priority_steps]


def test_custom_sep_steps_and_prefix():
    layout = RedisQueueLayout(sep=":", priority_steps=(0, 5), global_keyprefix="app1:")
    assert [layout.key("q", s) for s in layout.steps] == ["app1:q", "app1:q:5"]


def test_step_mapping_equals_kombu_for_custom_steps():
    kombu = KombuChannel(steps=[0, 2, 4, 6, 8])
    layout = RedisQueueLayout(priority_steps=(0, 2, 4, 6, 8))
    for priority in range(10):
        assert layout.step(priority) == kombu.priority(priority)


def test_recorded_message_gives_task_id_name_priority_eta_and_args_repr():
    assert parse_message(RECORDED, 3) == PendingMessage(
        task_id="6ad6fb55-4463-4fd4-bf4d-e76e2686b497", name="examples.tasks.add", priority=5,
        eta=ETA, args_repr="(1, 2)", kwargs_repr="{}", step=3)


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b"\xff\xfe"])
def test_what_is_not_a_kombu_envelope_is_none(raw):
    assert parse_message(raw, 0) is None


def test_an_envelope_without_headers_has_unknown_fields():
    assert parse_message(b'{"body": "e30="}', 0) == PendingMessage(
        None, None, None, None, None, None, 0)


def message(task_id: str | None, eta: float | None = None, step: int = 0) -> PendingMessage:
    return PendingMessage(task_id, "t", 0, eta, None, None, step)


def reading(*oldest: PendingMessage) -> RedisQueueReading:
    return RedisQueueReading("q", {0: 1, 3: 1, 6: 0, 9: 0}, {m.step: m for m in oldest})


def test_unknown_send_time_gives_no_age_rather_than_zero():
    r = reading(message("t1"), message("t2", step=3))
    assert waiting_since(r, None) is None
    assert waiting_since(r, lambda task_id: None) is None
    assert to_queue_state(r, None).waiting_since is None


def test_waiting_since_is_the_earliest_known_send_time_over_priority_lists():
    sent = {"t1": 100.0, "t2": 50.0}
    r = reading(message("t1"), message("t2", step=3), message("t3", step=6))
    assert waiting_since(r, sent.get) == 50.0


def test_a_message_waits_from_its_eta_when_later_than_sent():
    r = reading(message("t1", eta=130.0))
    assert waiting_since(r, {"t1": 100.0}.get) == 130.0


def test_queue_state_labels_priority_by_step():
    state = to_queue_state(reading(), None)
    assert state.lengths == {"0": 1, "3": 1, "6": 0, "9": 0}
    assert state.consumers is None


def test_page_ranges_follow_consumption_order_across_priority_lists():
    lengths = {0: 2, 3: 3, 6: 0, 9: 4}
    assert page_ranges(lengths, 0, 10) == [(0, -2, -1), (3, -3, -1), (9, -4, -1)]
    assert page_ranges(lengths, 1, 3) == [(0, -2, -2), (3, -2, -1)]
    assert page_ranges(lengths, 5, 2) == [(9, -2, -1)]
    assert page_ranges(lengths, 9, 5) == []


@pytest.mark.parametrize(("own", "key", "other"), [
    ("", b"app1:_kombu.binding.a", "app1:"),
    ("app1:", b"_kombu.binding.a", ""),
    ("app1:", b"app1:_kombu.binding.a", None),
    ("", b"_kombu.binding.a", None),
    ("", b"app1:_kombu.binding.celery.pidbox", None),  # any client declares these
    ("", b"app1:_kombu.binding.reply.celery.pidbox", None),
    ("", b"app1:_kombu.binding.celeryev", None),
    ("", b"unrelated", None),
])
def test_other_keyprefix_of_a_task_queue_binding(own, key, other):
    assert RedisQueueLayout(global_keyprefix=own).other_keyprefix(key) == other
