"""The kombu path's shortcuts give what kombu and py-amqp give: decoding and buffered reads."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from amqp.transport import TCPTransport
from kombu.exceptions import ContentDisallowed
from kombu.message import Message
from kombu.serialization import dumps, prepare_accept_content

from exporter.consumer import _BufferedTCPTransport, buffer_reads, decode_message

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


def _frame(channel: int, payload: bytes, frame_type: int = 1) -> bytes:
    return struct.pack(">BHI", frame_type, channel, len(payload)) + payload + b"\xce"


class _Socket:
    """``recv`` that hands out ``data`` in the given chunk sizes (never more than asked),
    raising ``socket.timeout`` where a chunk size is 0."""

    def __init__(self, data: bytes, chunks: list[int]) -> None:
        self.data, self.chunks, self.calls = data, list(chunks), 0

    def recv(self, n: int) -> bytes:
        self.calls += 1
        size = self.chunks.pop(0) if self.chunks else n
        if size == 0:
            raise TimeoutError()
        out, self.data = self.data[:min(n, size)], self.data[min(n, size):]
        return out


def _transport(sock: _Socket) -> _BufferedTCPTransport:
    transport = TCPTransport("127.0.0.1:1")
    transport._read_buffer = b""
    transport._quick_recv = sock.recv
    assert buffer_reads(type("Conn", (), {"connection": type("C", (), {
        "transport": transport})()})())
    assert isinstance(transport, _BufferedTCPTransport)
    return transport


FRAMES = [_frame(1, b"x" * size) for size in (0, 1, 7, 100, 5000, 70000, 3)]


@pytest.mark.parametrize("chunks", [[], [1] * 200, [3, 0, 11, 0, 0, 5000, 0, 70000, 0]],
                         ids=["whole", "byte-by-byte", "with-timeouts"])
def test_buffered_reads_give_the_same_frames_across_chunks_and_timeouts(
        chunks: list[int]) -> None:
    sock = _Socket(b"".join(FRAMES), chunks)
    transport = _transport(sock)
    got = []
    while len(got) < len(FRAMES):
        try:
            got.append(transport.read_frame())
        except TimeoutError:
            continue  # py-amqp put the partly read frame back; the next read goes on
    assert got == [(1, 1, frame[7:-1]) for frame in FRAMES]


def test_buffered_reads_read_many_messages_per_recv() -> None:
    frames = [_frame(1, b"e" * 600) for _ in range(200)]
    sock = _Socket(b"".join(frames), [])
    transport = _transport(sock)
    for _ in frames:
        transport.read_frame()
    assert sock.calls <= 3


def test_buffer_reads_leaves_other_transports_alone() -> None:
    class Other(TCPTransport):
        pass

    other = Other("127.0.0.1:1")
    conn = type("Conn", (), {"connection": type("C", (), {"transport": other})()})()
    assert not buffer_reads(conn)
    assert type(other) is Other
    assert not buffer_reads(object())


def test_decode_message_leaves_bytes_in_other_encodings_to_kombu() -> None:
    body = '{"type": "task-sent", "name": "caf\u00e9"}'.encode("latin-1")
    with pytest.raises(Exception) as ours:
        decode_message(_message(body, content_encoding="latin-1"), True)
    with pytest.raises(Exception) as kombus:
        _message(body, content_encoding="latin-1").decode()
    assert type(ours.value) is type(kombus.value)
