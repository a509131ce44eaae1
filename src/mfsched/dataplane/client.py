"""A runtime's client of its host daemon: one Unix-socket connection, no event loop needed.

Who calls this: the vLLM connectors' worker side (:class:`mfsched.integrations.vllm.gate.
DaemonGate`, :mod:`mfsched.integrations.vllm.kv_worker`), which run inside vLLM's worker
processes and call it from their hooks. The wall-clock engine of the emulation has its own
asyncio client; both speak the messages of :mod:`.protocol`.

* :meth:`DaemonClient.hello` opens a run as its driver (scheduler, levels, options). Model time
  is wall time (``time.time()``, the clock of vLLM's request arrivals) minus the wall time of
  the hello, and the run's ``epoch_s`` is the daemon's CLOCK_MONOTONIC at that moment, so both
  sides count the same seconds from the same instant. Sizes are real bytes (byte scale 1).
* :meth:`send` writes one message; :meth:`poll` reads what the daemon sent without blocking and
  files it: ``completion`` -> :attr:`completions`, ``priorities`` -> :attr:`priorities`,
  ``pruned`` -> :attr:`pruned`, ``error`` -> :attr:`errors` (logged); :meth:`wait_for` blocks
  for one reply type, filing the others.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import time
import uuid
from collections import deque
from collections.abc import Mapping
from typing import Any

from ..policy.types import Priority
from .protocol import MAX_MESSAGE_BYTES, ProtocolError, decode_body, encode

__all__ = ["DaemonClient", "DaemonUnavailable"]

log = logging.getLogger("mfsched.client")
_LEN = struct.Struct("!I")


class DaemonUnavailable(ConnectionError):
    """The daemon's socket cannot be reached, or the connection broke."""


class DaemonClient:
    """Blocking client of one daemon's control socket."""

    def __init__(self, path: str, timeout_s: float = 10.0) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.settimeout(timeout_s)
            self.sock.connect(path)
        except OSError as e:
            self.sock.close()
            raise DaemonUnavailable(f"mfsched daemon at {path}: {e}") from None
        self._buf = bytearray()
        self.server = -1
        self.gpus_per_server = 4
        self.wall0_s = time.time()
        self.completions: dict[int, dict] = {}
        self.pruned: set[int] = set()
        self.cancelled: set[int] = set()  # KV flows the daemon stopped (kv_cancel answered)
        self.priorities: dict[int, Priority] = {}  # admission flows (see the gate)
        self.errors: deque[str] = deque(maxlen=100)
        self._replies: dict[str, deque[dict]] = {}

    # --- a run ----------------------------------------------------------------------------------

    def hello(self, scheduler: str, num_levels: int, options: Mapping[str, str] | None = None,
              run_id: str | None = None, role: str = "driver") -> int:
        """Open (or join) a run; returns the daemon's server number."""
        self.wall0_s = time.time()
        epoch = time.monotonic()
        self.send({"type": "hello", "role": role, "run_id": run_id or uuid.uuid4().hex,
                   "scheduler": scheduler, "num_levels": num_levels,
                   "options": [[str(k), str(v)] for k, v in (options or {}).items()],
                   "epoch_s": epoch, "time_scale": 1.0, "byte_scale": 1.0})
        welcome = self.wait_for("welcome")
        self.server = welcome["server"]
        self.gpus_per_server = welcome.get("gpus_per_server", 4)
        return self.server

    def model_s(self, wall_s: float) -> float:
        """Model time of a wall-clock instant (``time.time()`` seconds)."""
        return wall_s - self.wall0_s

    # --- messages ---------------------------------------------------------------------------------

    def send(self, msg: Mapping[str, Any]) -> None:
        try:
            self.sock.sendall(encode(msg))
        except OSError as e:
            raise DaemonUnavailable(f"mfsched daemon at {self.path}: {e}") from None

    def poll(self) -> int:
        """Read and file every message already here; returns how many."""
        self.sock.setblocking(False)
        try:
            while True:
                try:
                    data = self.sock.recv(1 << 16)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as e:
                    raise DaemonUnavailable(f"mfsched daemon at {self.path}: {e}") from None
                if not data:
                    raise DaemonUnavailable(f"mfsched daemon at {self.path} closed the "
                                            "connection")
                self._buf += data
        finally:
            self.sock.settimeout(self.timeout_s)
        return self._file_frames()

    def wait_for(self, kind: str, timeout_s: float | None = None) -> dict:
        """Block until a ``kind`` message arrives (others are filed meanwhile)."""
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        while True:
            queue = self._replies.get(kind)
            if queue:
                return queue.popleft()
            left = deadline - time.monotonic()
            if left <= 0:
                last = f" (last error: {self.errors[-1]})" if self.errors else ""
                raise TimeoutError(f"no {kind!r} from the daemon at {self.path}{last}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(1 << 16)
            except TimeoutError:
                continue
            except OSError as e:
                raise DaemonUnavailable(f"mfsched daemon at {self.path}: {e}") from None
            finally:
                self.sock.settimeout(self.timeout_s)
            if not data:
                raise DaemonUnavailable(f"mfsched daemon at {self.path} closed the connection")
            self._buf += data
            self._file_frames()

    def _file_frames(self) -> int:
        n = 0
        buf = self._buf
        while len(buf) >= 4:
            (length,) = _LEN.unpack_from(buf)
            if length > MAX_MESSAGE_BYTES:
                raise ProtocolError(f"daemon sent a {length}-byte frame")
            if len(buf) < 4 + length:
                break
            body = bytes(buf[4:4 + length])
            del buf[:4 + length]
            self._file(decode_body(body))
            n += 1
        return n

    def _file(self, msg: dict) -> None:
        kind = msg["type"]
        if kind == "completion":
            self.completions[msg["flow_id"]] = msg
        elif kind == "priorities":
            for fid, level, rank in msg["flows"]:
                self.priorities[fid] = Priority(level, rank)
        elif kind == "kv_cancelled":
            self.cancelled.update(msg["flow_ids"])
        elif kind == "pruned":
            self.pruned.update(msg["request_ids"])
        elif kind == "error":
            self.errors.append(msg["reason"])
            log.warning("mfsched daemon %s: %s", self.path, msg["reason"])
        else:
            self._replies.setdefault(kind, deque()).append(msg)

    def stats(self) -> dict[str, float]:
        self.send({"type": "stats"})
        return dict(self.wait_for("stats_reply")["stats"])

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
