"""Control messages: JSON objects framed by a 4-byte big-endian length, with a schema per type.

Everybody on the control plane uses this module: the wall-clock engine talking to its daemons
over Unix sockets, daemons talking to the coordinator, and the tests. The data plane (bulk
bytes between daemons) has its own binary framing in :mod:`mfsched.dataplane.transport`.

Rules: a frame carries at most :data:`MAX_MESSAGE_BYTES` of UTF-8 JSON; the top level is an
object with a ``type`` from :data:`SCHEMAS`; every field is checked (type, range, length of
lists; one pydantic model per type) and unknown fields are refused, so a typo never passes
silently. Problems raise
:class:`ProtocolError` with a reason that names the field. Servers answer a bad message with an
``error`` message and keep the connection (the framing is intact); an oversized frame is
answered and its payload skipped when that is cheap, otherwise the connection is closed.
Nothing is ever unpickled or evaluated.

(About 440 lines, over the project's 400, for one reason: the schema of every control message
sits in this one file, so that a reader sees the whole control plane's vocabulary at once.)
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..policy.types import BatchInfo, FlowInfo, RequestInfo, Stage

__all__ = [
    "MAX_MESSAGE_BYTES",
    "SCHEMAS",
    "BlockingClient",
    "FrameTooLarge",
    "ProtocolError",
    "batch_from",
    "batch_msg",
    "decode_body",
    "encode",
    "error_message",
    "flow_from",
    "flow_msg",
    "next_valid_message",
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


# --- the schema: one pydantic model per message type ---------------------------------------------
#
# Every scalar is strict (no "5" for 5, no true for 1); numbers are finite unless said; lists
# have a length limit; unknown fields are refused (extra="forbid").


def _int(lo: int = 0, hi: int = 2**62) -> Any:
    return Annotated[int, Field(strict=True, ge=lo, le=hi)]


def _num(lo: float = 0.0, hi: float = 1e18) -> Any:
    return Annotated[float, Field(strict=True, ge=lo, le=hi, allow_inf_nan=False)]


def _str(max_len: int) -> Any:
    return Annotated[str, Field(strict=True, max_length=max_len)]


def _list(item: Any, max_len: int) -> Any:
    return Annotated[list[item], Field(max_length=max_len)]


_ID = _int()
_TIME = _num(-1e9, 1e12)
_BYTES = _num(0.0, 1e15)
_LAYER = _int(0, 100_000)
_LEVEL = _int(0, 1 << 16)
_BOOL = Annotated[bool, Field(strict=True)]
_PORTS = _list(tuple[_int(0, 2**31), _BYTES], 4096)  # [[port, bytes], ...]
_MEMBER = tuple[_int(0, 65535), _int(0, 1 << 20), _int(0, 1 << 20), _BYTES]  # index, src, dst, B
_SLO = Annotated[float, Field(strict=True, ge=0.0, allow_inf_nan=True)]  # inf: no SLO


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Reported(_Message):
    report: _BOOL = False  # the daemon that should forward this event to the coordinator


class Hello(_Message):
    role: Literal["driver", "daemon", "probe"]
    run_id: _str(64)
    server: _int(0, 1 << 16) = 0
    scheduler: _str(64) = "fs"
    num_levels: _int(1, 64) = 8
    options: _list(tuple[_str(64), _str(256)], 64) = []
    epoch_s: _num(0.0, 1e12) = 0.0
    time_scale: _num(1e-6, 1e6) = 1.0
    byte_scale: _num(1e-6, 1e9) = 1.0
    coordinated: _BOOL = False


class RequestMsg(_Reported):
    request_id: _ID
    arrival_s: _TIME
    slo_s: _SLO
    input_tokens: _int(0, 1 << 30)


class RequestDone(_Reported):
    request_id: _ID


class BatchStart(_Reported):
    batch_id: _ID
    instance: _int(0, 1 << 20)
    request_ids: _list(_ID, 65536)
    num_layers: _int(1, 100_000)
    start_s: _TIME
    layer_compute_s: _num(0.0, 1e6)
    p2d_port_bytes: _list(tuple[_ID, _PORTS], 65536) = []
    early_port_bytes: _PORTS = []
    port_capacity_bps: _PORTS = []


class LayerStart(_Reported):
    batch_id: _ID
    layer: _LAYER


class BatchRef(_Reported):
    batch_id: _ID


class Submit(_Message):
    flow_id: _ID
    stage: _int(1, 3)
    batch_id: _ID
    request_ids: _list(_ID, 65536)
    layer: _LAYER
    target_layer: _LAYER
    size_bytes: _BYTES
    total_bytes: _BYTES
    members: _int(1, 1 << 20)
    port_bytes: _PORTS
    bottleneck_bps: _num(0.0, 1e15)
    deadline_s: _TIME | None
    submit_s: _TIME
    local: _list(_MEMBER, 65536)  # this daemon's members: [index, src_gpu, dst_gpu, bytes]
    connections: _int(1, 1024) = 1  # fair shares per member (workload.comm), see sender
    payload: _str(128) | None = None  # a KV flow's staged bytes: a /dev/shm segment (kvstore)
    admission: _BOOL = False  # no bytes here: the runtime moves them, asks only the priority


class FlowRef(_Message):
    flow_id: _ID


class Priorities(_Message):
    flows: _list(tuple[_ID, _LEVEL, _int(0, 2**62)], 65536)  # [flow id, level, rank]


class FlowIds(_Message):
    flow_ids: _list(_ID, 65536)


class KVReady(_Message):
    # [flow id, segment name, bytes, wall time (time.time()) its last byte arrived]
    flows: _list(tuple[_ID, _str(128), _BYTES, _num(0.0, 1e12)], 65536)


class Empty(_Message):
    pass


class Welcome(_Message):
    server: _int(0, 1 << 16)
    gpus_per_server: _int(1, 1 << 16) = 4  # GPU g is on server g // gpus_per_server
    pid: _int(0, 1 << 31)
    run_id: _str(64)


class Completion(_Message):
    flow_id: _ID
    first_level: _LEVEL
    last_level: _LEVEL
    bytes: _BYTES


class Pruned(_Message):
    request_ids: _list(_ID, 1 << 20)


class StatsReply(_Message):
    stats: _list(tuple[_str(64), _num(-1e18, 1e18)], 256)


class Error(_Message):
    reason: _str(1024)
    in_reply_to: _str(64) | None = None


class P2dSubmit(_Message):
    flow_id: _ID
    request_id: _ID
    batch_id: _ID
    layer: _LAYER
    port_bytes: _PORTS


class P2dComplete(_Message):
    flow_id: _ID


class P2dProgress(_Message):
    flows: _list(tuple[_ID, _num(0.0, 1.0)], 1 << 16)  # [flow id, share of its bytes left]


class DecisionMsg(_Message):
    ranks: _list(tuple[_ID, _int(0, 1 << 30)], 1 << 20)
    pruned: _list(_ID, 1 << 20)
    epoch: _int(0, 2**62)


SCHEMAS: dict[str, type[_Message]] = {
    # driver (runtime) -> daemon
    "hello": Hello, "request": RequestMsg, "request_done": RequestDone, "batch_start": BatchStart,
    "layer_start": LayerStart, "batch_compute_done": BatchRef, "batch_end": BatchRef,
    "submit": Submit, "stats": Empty, "shutdown": Empty,
    # runtime -> daemon: KV flows (kvstore): take arrived ones, free them, stop sending some
    "kv_claim": FlowIds, "kv_release": FlowIds, "kv_cancel": FlowIds,
    "flow_done": FlowRef,  # an admission flow's bytes were moved by the runtime
    # daemon -> runtime
    "kv_ready": KVReady, "priorities": Priorities, "kv_cancelled": FlowIds,
    # daemon -> driver
    "welcome": Welcome, "completion": Completion, "pruned": Pruned, "stats_reply": StatsReply,
    "error": Error,
    # daemon -> coordinator
    "p2d_submit": P2dSubmit, "p2d_complete": P2dComplete, "p2d_progress": P2dProgress,
    # coordinator -> daemons
    "decision": DecisionMsg,
}


def validate(obj: Any, accept: frozenset[str] | None = None) -> dict:
    """Check a decoded message against its schema; returns it with numbers normalised (fields
    the sender left out stay out)."""
    if not isinstance(obj, dict):
        raise ProtocolError(f"a message must be a JSON object, got {type(obj).__name__}")
    kind = obj.get("type")
    if not isinstance(kind, str) or kind not in SCHEMAS:
        raise ProtocolError(f"type: unknown message type {kind!r}")
    if accept is not None and kind not in accept:
        raise ProtocolError(f"type: {kind!r} is not accepted here")
    try:
        msg = SCHEMAS[kind].model_validate({k: v for k, v in obj.items() if k != "type"})
    except ValidationError as e:
        raise ProtocolError(_reason(kind, e)) from None
    return {"type": kind, **msg.model_dump(exclude_unset=True)}


def _reason(kind: str, e: ValidationError) -> str:
    """The first problem, named by its path: ``submit.local[0][3]: ...``."""
    errors = e.errors()
    extra = [str(err["loc"][0]) for err in errors if err["type"] == "extra_forbidden"]
    if extra:
        return f"{kind}: unknown field(s) {', '.join(sorted(extra))}"
    err = errors[0]
    path = kind + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
    if err["type"] == "missing":
        return f"{path}: missing"
    got = repr(err["input"])
    return f"{path}: {err['msg'].lower()}, got {got if len(got) <= 40 else got[:37] + '...'}"


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


async def next_valid_message(reader: asyncio.StreamReader, accept: frozenset[str],
                             reject: Callable[[str], None]) -> dict | None:
    """What a server reads from one client: the next valid message, or None when the stream
    ended or can no longer be trusted. Each bad or oversized message is passed to ``reject``
    (which answers it) and skipped."""
    while True:
        try:
            body = await read_frame(reader)
            return None if body is None else decode_body(body, accept)
        except FrameTooLarge as e:
            reject(str(e))
            if e.length > SKIP_LIMIT_BYTES:
                return None
        except ProtocolError as e:
            reject(str(e))
            if "stream ended" in str(e):
                return None


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


def flow_msg(info: FlowInfo, local: list[tuple[int, int, int, float]],
             connections: int = 1) -> dict:
    return {"type": "submit", "flow_id": info.flow_id, "stage": int(info.stage),
            "batch_id": info.batch_id, "request_ids": list(info.request_ids),
            "layer": info.layer, "target_layer": info.target_layer,
            "size_bytes": info.size_bytes, "total_bytes": info.total_bytes,
            "members": info.members, "port_bytes": [[int(p), float(b)] for p, b in
                                                    info.port_bytes],
            "bottleneck_bps": info.bottleneck_bps, "deadline_s": info.deadline_s,
            "submit_s": info.submit_s, "local": [list(m) for m in local],
            "connections": connections}


def flow_from(msg: Mapping[str, Any]) -> FlowInfo:
    return FlowInfo(msg["flow_id"], Stage(msg["stage"]), msg["batch_id"],
                    tuple(msg["request_ids"]), msg["layer"], msg["target_layer"],
                    msg["size_bytes"], msg["total_bytes"], msg["members"],
                    tuple(tuple(p) for p in msg["port_bytes"]), msg["bottleneck_bps"],
                    msg["deadline_s"], msg["submit_s"])


class BlockingClient:
    """A blocking client of a daemon's or the coordinator's Unix socket, for tests, benchmarks
    and scripts (the data plane's own processes use asyncio)."""

    def __init__(self, path: str, timeout_s: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout_s)
        self.sock.connect(path)

    def send(self, msg: Mapping[str, Any]) -> None:
        self.sock.sendall(encode(msg))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self) -> dict:
        (n,) = _LEN.unpack(self._exact(4))
        return decode_body(self._exact(n))

    def _exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            part = self.sock.recv(n - len(buf))
            if not part:
                raise ConnectionError("closed")
            buf += part
        return buf

    def close(self) -> None:
        self.sock.close()
