"""Control-message framing and schemas: round trips, precise rejections, size limits."""

from __future__ import annotations

import asyncio
import json
import struct

import pytest

from mfsched.dataplane import protocol as p
from mfsched.policy.types import BatchInfo, FlowInfo, RequestInfo, Stage


def _reader(data: bytes) -> asyncio.StreamReader:
    r = asyncio.StreamReader(limit=p.SKIP_LIMIT_BYTES)
    r.feed_data(data)
    r.feed_eof()
    return r


def _frame(body: bytes) -> bytes:
    return struct.pack("!I", len(body)) + body


def test_policy_types_round_trip():
    flow = FlowInfo(7, Stage.P2D, 3, (11,), 2, 32, 4096.0, 8192.0, 2, ((5, 4096.0), (9, 4096.0)),
                    1e11, 1.25, 0.5)
    msg = p.decode_body(p.encode(p.flow_msg(flow, [(0, 1, 17, 4096.0)]))[4:])
    assert p.flow_from(msg) == flow and msg["local"] == [(0, 1, 17, 4096.0)]
    batch = BatchInfo(3, 1, (11, 12), 32, 0.25, 1e-3, {11: {5: 10.0}}, {4: 2.0}, {4: 1e11})
    assert p.batch_from(p.decode_body(p.encode(p.batch_msg(batch))[4:])) == batch
    req = RequestInfo(11, 0.1, float("inf"), 100)
    assert p.request_from(p.decode_body(p.encode(p.request_msg(req))[4:])) == req


@pytest.mark.parametrize("obj,fragment", [
    ([1, 2], "must be a JSON object"),
    ({"type": "nope"}, "unknown message type 'nope'"),
    ({"type": "layer_start", "batch_id": 1}, "layer_start.layer: missing"),
    ({"type": "layer_start", "batch_id": -1, "layer": 0},
     "layer_start.batch_id: input should be greater than or equal to 0, got -1"),
    ({"type": "layer_start", "batch_id": True, "layer": 0}, "should be a valid integer, got True"),
    ({"type": "layer_start", "batch_id": "1", "layer": 0}, "should be a valid integer, got '1'"),
    ({"type": "layer_start", "batch_id": 1, "layer": 0, "extra": 1}, "unknown field(s) extra"),
    ({"type": "request", "request_id": 1, "arrival_s": "x", "slo_s": 1, "input_tokens": 3},
     "request.arrival_s: input should be a valid number"),
    ({"type": "request", "request_id": 1, "arrival_s": 0, "slo_s": 1, "input_tokens": 3,
      "report": 1}, "request.report: input should be a valid boolean"),
    ({"type": "stats", "x": 1}, "unknown field(s) x"),
])
def test_schema_rejections_name_the_field(obj, fragment):
    with pytest.raises(p.ProtocolError) as e:
        p.decode_body(json.dumps(obj).encode())
    assert fragment in str(e.value)


def test_member_lists_are_checked_item_by_item():
    flow = FlowInfo(1, Stage.COLLECTIVE, 1, (1,), 0, 0, 10.0, 10.0, 1, ((0, 10.0),), 1e9, None,
                    0.0)
    msg = p.flow_msg(flow, [(0, 1, 2, 10.0)])
    msg["local"] = [[0, 1, 2, -5.0]]
    with pytest.raises(p.ProtocolError, match=r"submit\.local\[0\]\[3\]: input should be greater"):
        p.validate(msg)


def test_bad_json_nan_and_types_accepted_here():
    with pytest.raises(p.ProtocolError, match="not valid UTF-8 JSON"):
        p.decode_body(b"{nope")
    with pytest.raises(p.ProtocolError, match="not valid UTF-8 JSON"):
        p.decode_body(b"\xff\xfe")
    with pytest.raises(p.ProtocolError, match="NaN"):
        p.decode_body(b'{"type":"layer_start","batch_id":1,"layer":NaN}')
    with pytest.raises(p.ProtocolError, match="not accepted here"):
        p.decode_body(b'{"type":"stats"}', frozenset({"hello"}))


def test_frames_in_sequence_and_clean_end():
    data = p.encode({"type": "stats"}) + p.encode({"type": "shutdown"})

    async def go():
        r = _reader(data)
        return [await p.read_message(r), await p.read_message(r), await p.read_message(r)]

    assert asyncio.run(go()) == [{"type": "stats"}, {"type": "shutdown"}, None]


def test_oversized_frame_is_skipped_and_the_stream_goes_on():
    big = _frame(b"x" * (p.MAX_MESSAGE_BYTES + 1))

    async def go():
        r = _reader(big + p.encode({"type": "stats"}))
        with pytest.raises(p.FrameTooLarge) as e:
            await p.read_frame(r)
        assert e.value.length == p.MAX_MESSAGE_BYTES + 1 <= p.SKIP_LIMIT_BYTES
        return await p.read_message(r)

    assert asyncio.run(go()) == {"type": "stats"}


def test_huge_length_is_refused_without_reading():
    async def go():
        r = _reader(struct.pack("!I", 0xFFFFFFFF) + b"abc")
        with pytest.raises(p.FrameTooLarge) as e:
            await p.read_frame(r)
        return e.value.length

    assert asyncio.run(go()) > p.SKIP_LIMIT_BYTES


def test_truncated_frame():
    async def go():
        with pytest.raises(p.ProtocolError, match="inside a frame"):
            await p.read_frame(_reader(struct.pack("!I", 10) + b"abc"))
        with pytest.raises(p.ProtocolError, match="frame header"):
            await p.read_frame(_reader(b"\x00\x00"))

    asyncio.run(go())


def test_encode_refuses_oversized():
    with pytest.raises(p.FrameTooLarge):
        p.encode({"type": "error", "reason": "x" * (p.MAX_MESSAGE_BYTES + 10)})
