"""The kombu path's JSON shortcut gives what kombu's own decoding gives."""

from __future__ import annotations

from typing import Any

import pytest
from kombu.exceptions import ContentDisallowed
from kombu.message import Message
from kombu.serialization import dumps, prepare_accept_content

from exporter.events.consumer import decode_message

EVENT = {"type": "task-sent", "uuid": "u1", "timestamp": 1.7e9, "name": "x.add",
         "hostname": "producer@h", "clock": 3, "args": "(1, 2)", "eta": None}


def _message(body: Any, content_type: str = "application/json",
             content_encoding: str | None = "utf-8", accept: Any = ("json",)) -> Message:
    # kombu's Consumer hands its messages the accepted MIME types
    return Message(body=body, content_type=content_type, content_encoding=content_encoding,
                   accept=prepare_accept_content(list(accept)), channel=None)


def _kombu_json(value: Any) -> bytes:
    return dumps(value, serializer="json")[2].encode()


BODIES = [
    _kombu_json(EVENT),
    _kombu_json([EVENT, {**EVENT, "uuid": "u2", "type": "task-received"}]),
    _kombu_json({**EVENT, "eta": __import__("datetime").datetime(2026, 1, 2, 3, 4, 5)}),
    b'{"type": "task-succeeded", "uuid": "u1", "timestamp": NaN}',
    b'{"type": "task-succeeded", "uuid": "u1", "timestamp": 1, "n": 123456789012345678901234}',
    b'{"type": "task-sent", "uuid": "\\u00e9t\\u00e9", "name": "caf\xc3\xa9"}',
    b'"just a string"',
]


@pytest.mark.parametrize("as_str", [False, True], ids=["bytes", "str"])
@pytest.mark.parametrize("body", BODIES, ids=range(len(BODIES)))
def test_decode_message_gives_what_kombu_gives(body: bytes, as_str: bool) -> None:
    raw = body.decode() if as_str else body  # py-amqp hands a str when it decoded the body
    assert decode_message(_message(raw), True) == _message(raw).decode()


def test_decode_message_leaves_json_to_kombu_when_json_is_not_accepted() -> None:
    with pytest.raises(ContentDisallowed):
        decode_message(_message(_kombu_json(EVENT), accept=("pickle",)), False)


def test_decode_message_raises_on_bad_json_as_kombu_does() -> None:
    with pytest.raises(Exception) as ours:
        decode_message(_message(b"{not json"), True)
    with pytest.raises(Exception) as kombus:
        _message(b"{not json").decode()
    assert type(ours.value) is type(kombus.value)


def test_decode_message_leaves_bytes_in_other_encodings_to_kombu() -> None:
    body = '{"type": "task-sent", "name": "caf\u00e9"}'.encode("latin-1")
    with pytest.raises(Exception) as ours:
        decode_message(_message(body, content_encoding="latin-1"), True)
    with pytest.raises(Exception) as kombus:
        _message(body, content_encoding="latin-1").decode()
    assert type(ours.value) is type(kombus.value)
