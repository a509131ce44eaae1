"""Control messages: JSON objects framed by a 4-byte big-endian length, with a schema per type.

Everybody on the control plane uses this module: the wall-clock engine talking to its daemons
over Unix sockets, daemons talking to the coordinator, and the tests. The data plane (bulk
bytes between daemons) has its own binary framing in :mod:`mfsched.dataplane.transport`.

Rules: a frame carries at most :data:`MAX_MESSAGE_BYTES` of UTF-8 JSON; the top level is an
object with a ``type`` from :data:`SCHEMAS`; every field is checked (type, range, length of
lists) and unknown fields are refused, so a typo never passes silently. Problems raise
:class:`ProtocolError` with a reason that names the field. Servers answer a bad message with an
``error`` message and keep the connection (the framing is intact); an oversized frame is
answered and its payload skipped when that is cheap, otherwise the connection is closed.
Nothing is ever unpickled or evaluated.
"""

from __future__ import annotations

import asyncio
import json
import math
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..policy.types import BatchInfo, FlowInfo, RequestInfo, Stage

__all__ = [
    "MAX_MESSAGE_BYTES",
    "SCHEMAS",
    "FrameTooLarge",
    "ProtocolError",
    "batch_from",
    "batch_msg",
    "decode_body",
    "encode",
    "error_message",
    "flow_from",
    "flow_msg",
    "read_frame",
    "read_message",
    "request_from",
    "request_msg",
    "validate",
]

MAX_MESSAGE_BYTES = 1 << 20  # 1 MiB of JSON per control message
SKIP_LIMIT_BYTES = 16 << 20  # oversized frames up to this are read and dropped, not fatal
_LEN = struct.Struct("!I")


class ProtocolError(ValueError):
    """A message that breaks the framing or the schema; ``reason`` says where and why."""


class FrameTooLarge(ProtocolError):
    def __init__(self, length: int) -> None:
        super().__init__(f"frame of {length} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")
        self.length = length


# --- field checkers ------------------------------------------------------------------------------

Check = Callable[[Any, str], Any]


def _fail(path: str, want: str, got: Any) -> ProtocolError:
    text = repr(got)
    if len(text) > 40:
        text = text[:37] + "..."
    return ProtocolError(f"{path}: expected {want}, got {text}")


def Int(lo: int = 0, hi: int = 2**62) -> Check:
    def check(v: Any, path: str) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise _fail(path, f"an integer in [{lo}, {hi}]", v)
        return v
    return check


def Num(lo: float = 0.0, hi: float = 1e18, inf_ok: bool = False) -> Check:
    def check(v: Any, path: str) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise _fail(path, "a number", v)
        f = float(v)
        if math.isnan(f) or (math.isinf(f) and not inf_ok) or not (lo <= f <= hi or
                                                                    (inf_ok and math.isinf(f))):
            raise _fail(path, f"a number in [{lo:g}, {hi:g}]", v)
        return f
    return check


def Str(max_len: int = 256) -> Check:
    def check(v: Any, path: str) -> str:
        if not isinstance(v, str) or len(v) > max_len:
            raise _fail(path, f"a string of at most {max_len} characters", v)
        return v
    return check


def Bool() -> Check:
    def check(v: Any, path: str) -> bool:
        if not isinstance(v, bool):
            raise _fail(path, "true or false", v)
        return v
    return check


def Opt(inner: Check) -> Check:
    def check(v: Any, path: str) -> Any:
        return None if v is None else inner(v, path)
    return check


def ListOf(inner: Check, max_len: int = 100_000) -> Check:
    def check(v: Any, path: str) -> list:
        if not isinstance(v, list) or len(v) > max_len:
            raise _fail(path, f"a list of at most {max_len} items", v)
        return [inner(x, f"{path}[{i}]") for i, x in enumerate(v)]
    return check


def Tuple(*items: Check) -> Check:
    def check(v: Any, path: str) -> tuple:
        if not isinstance(v, list) or len(v) != len(items):
            raise _fail(path, f"a list of {len(items)} items", v)
        return tuple(c(x, f"{path}[{i}]") for i, (c, x) in enumerate(zip(items, v, strict=True)))
    return check


def OneOf(*choices: str) -> Check:
    def check(v: Any, path: str) -> str:
        if v not in choices:
            raise _fail(path, f"one of {', '.join(choices)}", v)
        return v
    return check


# --- the schema -----------------------------------------------------------------------------------

_ID = Int()
_TIME = Num(-1e9, 1e12)
_BYTES = Num(0.0, 1e15)
_PORTS = ListOf(Tuple(Int(0, 2**31), _BYTES), 4096)  # [[port, bytes], ...]
_MEMBER = Tuple(Int(0, 65535), Int(0, 1 << 20), Int(0, 1 << 20), _BYTES)  # index, src, dst, B
_LEVEL = Int(0, 1 << 16)
_RANK = Int(-(2**62), 2**62)


@dataclass(frozen=True)
class Field:
    check: Check
    required: bool = True


def _f(check: Check, required: bool = True) -> Field:
    return Field(check, required)


_REQUEST = {"request_id": _f(_ID), "arrival_s": _f(_TIME), "slo_s": _f(Num(0, 1e9, True)),
            "input_tokens": _f(Int(0, 1 << 30)), "report": _f(Bool(), False)}
_BATCH = {
    "batch_id": _f(_ID), "instance": _f(Int(0, 1 << 20)), "request_ids": _f(ListOf(_ID, 65536)),
    "num_layers": _f(Int(1, 100_000)), "start_s": _f(_TIME), "layer_compute_s": _f(Num(0, 1e6)),
    "p2d_port_bytes": _f(ListOf(Tuple(_ID, _PORTS), 65536), False),
    "early_port_bytes": _f(_PORTS, False),
    "port_capacity_bps": _f(_PORTS, False),
    "report": _f(Bool(), False),
}
_FLOW = {
    "flow_id": _f(_ID), "stage": _f(Int(1, 3)), "batch_id": _f(_ID),
    "request_ids": _f(ListOf(_ID, 65536)), "layer": _f(Int(0, 100_000)),
    "target_layer": _f(Int(0, 100_000)), "size_bytes": _f(_BYTES), "total_bytes": _f(_BYTES),
    "members": _f(Int(1, 1 << 20)), "port_bytes": _f(_PORTS), "bottleneck_bps": _f(Num(0, 1e15)),
    "deadline_s": _f(Opt(_TIME)), "submit_s": _f(_TIME),
    "local": _f(ListOf(_MEMBER, 65536)),  # this daemon's members: [index, src_gpu, dst_gpu, B]
}
_BATCH_REF = {"batch_id": _f(_ID), "report": _f(Bool(), False)}

SCHEMAS: dict[str, dict[str, Field]] = {
    # driver (runtime) -> daemon
    "hello": {"role": _f(OneOf("driver", "daemon", "probe")), "run_id": _f(Str(64)),
              "server": _f(Int(0, 1 << 16), False), "scheduler": _f(Str(64), False),
              "num_levels": _f(Int(1, 64), False),
              "options": _f(ListOf(Tuple(Str(64), Str(256)), 64), False),
              "epoch_s": _f(Num(0, 1e12), False), "time_scale": _f(Num(1e-6, 1e6), False),
              "byte_scale": _f(Num(1e-6, 1e9), False), "coordinated": _f(Bool(), False)},
    "request": _REQUEST,
    "request_done": {"request_id": _f(_ID), "report": _f(Bool(), False)},
    "batch_start": _BATCH,
    "layer_start": {"batch_id": _f(_ID), "layer": _f(Int(0, 100_000)),
                    "report": _f(Bool(), False)},
    "batch_compute_done": _BATCH_REF,
    "batch_end": _BATCH_REF,
    "submit": _FLOW,
    "stats": {},
    "shutdown": {},
    # daemon -> driver
    "welcome": {"server": _f(Int(0, 1 << 16)), "pid": _f(Int(0, 1 << 31)),
                "run_id": _f(Str(64))},
    "completion": {"flow_id": _f(_ID), "first_level": _f(_LEVEL), "last_level": _f(_LEVEL),
                   "bytes": _f(_BYTES)},
    "pruned": {"request_ids": _f(ListOf(_ID, 1 << 20))},
    "stats_reply": {"stats": _f(ListOf(Tuple(Str(64), Num(-1e18, 1e18)), 256))},
    "error": {"reason": _f(Str(1024)), "in_reply_to": _f(Opt(Str(64)), False)},
    # daemon -> coordinator
    "p2d_submit": {"flow_id": _f(_ID), "request_id": _f(_ID), "batch_id": _f(_ID),
                   "layer": _f(Int(0, 100_000)), "port_bytes": _f(_PORTS)},
    "p2d_complete": {"flow_id": _f(_ID)},
    # coordinator -> daemons
    "decision": {"ranks": _f(ListOf(Tuple(_ID, Int(0, 1 << 30)), 1 << 20)),
                 "pruned": _f(ListOf(_ID, 1 << 20)), "epoch": _f(Int(0, 2**62))},
}


def validate(obj: Any, accept: frozenset[str] | None = None) -> dict:
    """Check a decoded message against its schema; returns it with numbers normalised."""
    if not isinstance(obj, dict):
        raise ProtocolError(f"a message must be a JSON object, got {type(obj).__name__}")
    kind = obj.get("type")
    if not isinstance(kind, str) or kind not in SCHEMAS:
        raise ProtocolError(f"type: unknown message type {kind!r}")
    if accept is not None and kind not in accept:
        raise ProtocolError(f"type: {kind!r} is not accepted here")
    schema = SCHEMAS[kind]
    unknown = set(obj) - set(schema) - {"type"}
    if unknown:
        raise ProtocolError(f"{kind}: unknown field(s) {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {"type": kind}
    for name, spec in schema.items():
        if name not in obj:
            if spec.required:
                raise ProtocolError(f"{kind}.{name}: missing")
            continue
        out[name] = spec.check(obj[name], f"{kind}.{name}")
    return out


# --- framing --------------------------------------------------------------------------------------


def _finite(o: Any) -> Any:
    raise TypeError(f"cannot encode {type(o).__name__}")


def encode(msg: Mapping[str, Any]) -> bytes:
    """One frame: length prefix + compact JSON. Infinity is written as a JSON extension
    (Python's json reads it back); a NaN would be refused by the reader's schema check."""
    body = json.dumps(msg, separators=(",", ":"), default=_finite, allow_nan=True).encode()
    if len(body) > MAX_MESSAGE_BYTES:
        raise FrameTooLarge(len(body))
    return _LEN.pack(len(body)) + body


def decode_body(body: bytes, accept: frozenset[str] | None = None) -> dict:
    try:
        obj = json.loads(body.decode("utf-8"), parse_constant=_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProtocolError(f"not valid UTF-8 JSON: {e}") from None
    except RecursionError:
        raise ProtocolError("JSON nested too deeply") from None
    return validate(obj, accept)


def _constant(name: str) -> float:
    if name == "NaN":
        raise ProtocolError("NaN is not a valid number")
    return float(name)


async def read_frame(reader: asyncio.StreamReader) -> bytes | None:
    """The next frame's body, or None at a clean end of stream. An oversized frame raises
    :class:`FrameTooLarge` after its body was skipped (if small enough to skip), so the caller
    can answer and go on; ``FrameTooLarge.length > SKIP_LIMIT_BYTES`` means the stream is lost."""
    try:
        head = await reader.readexactly(4)
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            return None
        raise ProtocolError("stream ended inside a frame header") from None
    (length,) = _LEN.unpack(head)
    if length > MAX_MESSAGE_BYTES:
        if length <= SKIP_LIMIT_BYTES:
            left = length
            while left:
                chunk = await reader.read(min(left, 1 << 16))
                if not chunk:
                    break
                left -= len(chunk)
        raise FrameTooLarge(length)
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise ProtocolError("stream ended inside a frame") from None


async def read_message(reader: asyncio.StreamReader,
                       accept: frozenset[str] | None = None) -> dict | None:
    body = await read_frame(reader)
    return None if body is None else decode_body(body, accept)


def error_message(reason: str, in_reply_to: str | None = None) -> dict:
    return {"type": "error", "reason": reason[:1024], "in_reply_to": in_reply_to}


# --- policy types <-> messages ----------------------------------------------------------------


def _pairs(mapping: Mapping[int, float]) -> list[list]:
    return [[int(k), float(v)] for k, v in mapping.items()]


def request_msg(info: RequestInfo, report: bool = False) -> dict:
    return {"type": "request", "request_id": info.request_id, "arrival_s": info.arrival_s,
            "slo_s": info.slo_s, "input_tokens": info.input_tokens, "report": report}


def request_from(msg: Mapping[str, Any]) -> RequestInfo:
    return RequestInfo(msg["request_id"], msg["arrival_s"], msg["slo_s"], msg["input_tokens"])


def batch_msg(info: BatchInfo, report: bool = False) -> dict:
    return {"type": "batch_start", "batch_id": info.batch_id, "instance": info.instance,
            "request_ids": list(info.request_ids), "num_layers": info.num_layers,
            "start_s": info.start_s, "layer_compute_s": info.layer_compute_s,
            "p2d_port_bytes": [[int(r), _pairs(per)] for r, per in info.p2d_port_bytes.items()],
            "early_port_bytes": _pairs(info.early_port_bytes),
            "port_capacity_bps": _pairs(info.port_capacity_bps), "report": report}


def batch_from(msg: Mapping[str, Any]) -> BatchInfo:
    return BatchInfo(
        msg["batch_id"], msg["instance"], tuple(msg["request_ids"]), msg["num_layers"],
        msg["start_s"], msg["layer_compute_s"],
        {r: dict(per) for r, per in msg.get("p2d_port_bytes", ())},
        dict(msg.get("early_port_bytes", ())), dict(msg.get("port_capacity_bps", ())))


def flow_msg(info: FlowInfo, local: list[tuple[int, int, int, float]]) -> dict:
    return {"type": "submit", "flow_id": info.flow_id, "stage": int(info.stage),
            "batch_id": info.batch_id, "request_ids": list(info.request_ids),
            "layer": info.layer, "target_layer": info.target_layer,
            "size_bytes": info.size_bytes, "total_bytes": info.total_bytes,
            "members": info.members, "port_bytes": [[int(p), float(b)] for p, b in
                                                    info.port_bytes],
            "bottleneck_bps": info.bottleneck_bps, "deadline_s": info.deadline_s,
            "submit_s": info.submit_s, "local": [list(m) for m in local]}


def flow_from(msg: Mapping[str, Any]) -> FlowInfo:
    return FlowInfo(msg["flow_id"], Stage(msg["stage"]), msg["batch_id"],
                    tuple(msg["request_ids"]), msg["layer"], msg["target_layer"],
                    msg["size_bytes"], msg["total_bytes"], msg["members"],
                    tuple(tuple(p) for p in msg["port_bytes"]), msg["bottleneck_bps"],
                    msg["deadline_s"], msg["submit_s"])
