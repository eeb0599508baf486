"""The IPC framing taken apart in pieces (postclient/ipc.py: encode_message, MessageReader).

The queue manager reads its delivery agents' replies from non-blocking sockets,
so a message may come in any number of pieces, and several in one.
"""

import json
import struct

import pytest

from postclient import ipc


def frames(*messages):
    return b"".join(ipc.encode_message(m) for m in messages)


def test_an_encoded_message_is_its_length_then_compact_json():
    data = ipc.encode_message({"request": "deliver", "n": [1, 2]})
    payload = b'{"request":"deliver","n":[1,2]}'
    assert data == struct.pack(">I", len(payload)) + payload


def test_an_over_size_message_is_refused_before_it_is_sent():
    with pytest.raises(ipc.IpcError, match="exceeds the 1048576-byte limit"):
        ipc.encode_message({"x": "y" * ipc.MAX_MESSAGE})


def test_messages_come_out_whole_whatever_the_pieces():
    first, second = {"protocol": "delivery", "version": 1}, {"status": "ok", "text": "é\udcff"}
    data = frames(first, second)
    for size in (1, 2, 3, 5, 7, len(data)):
        reader = ipc.MessageReader()
        out = []
        for start in range(0, len(data), size):
            reader.feed(data[start:start + size])
            while (message := reader.next_message()) is not None:
                out.append(message)
        assert out == [first, second], size
        assert not reader.partial


def test_partial_tells_an_unfinished_message_from_the_space_between_two():
    reader = ipc.MessageReader()
    assert reader.next_message() is None and not reader.partial
    data = frames({"a": 1})
    reader.feed(data[:2])
    assert reader.next_message() is None and reader.partial     # half a header
    reader.feed(data[2:-1])
    assert reader.next_message() is None and reader.partial     # all but one byte
    reader.feed(data[-1:])
    assert reader.next_message() == {"a": 1} and not reader.partial


def test_a_length_over_the_limit_is_an_error_at_once():
    reader = ipc.MessageReader()
    reader.feed(struct.pack(">I", ipc.MAX_MESSAGE + 1))
    with pytest.raises(ipc.IpcError, match="exceeds the 1048576-byte limit"):
        reader.next_message()


@pytest.mark.parametrize("payload, reason", [
    (b"not json", "not a JSON object"),
    (json.dumps([1, 2]).encode(), "not an attribute list"),
    (b"\xff\xfe{", "not a JSON object"),
])
def test_a_malformed_payload_is_an_error(payload, reason):
    reader = ipc.MessageReader()
    reader.feed(struct.pack(">I", len(payload)) + payload)
    with pytest.raises(ipc.IpcError, match=reason):
        reader.next_message()


def test_check_protocol_names_what_the_peer_announced():
    ipc.check_protocol({"protocol": "delivery", "version": 1}, "delivery", 1)
    with pytest.raises(ipc.IpcError, match="expected protocol delivery version 1, got 'scache' version 2"):
        ipc.check_protocol({"protocol": "scache", "version": 2}, "delivery", 1)
