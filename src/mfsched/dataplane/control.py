"""The server side of a control socket, shared by the daemon and the coordinator.

:class:`ControlServer` owns one Unix socket (created with explicit permissions by
:mod:`.localsock`), reads each client's messages (:func:`.protocol.next_valid_message`) and
passes the valid ones to a handler; the daemon and the coordinator only write handlers. It
enforces the :class:`~.limits.ControlLimits`:

* at most ``max_clients`` clients; a client of another user (``SO_PEERCRED``) is refused;
* each client has a message rate (a token bucket): a faster client is read more slowly, after
  one ``error`` message that says so; nothing is dropped, the kernel's socket buffer makes the
  client wait;
* replies a client does not read pile up in the daemon only to ``max_backlog_bytes``; then
  the client is dropped;
* a bad message gets an ``error`` reply naming the field and the server reads on; a handler
  raising :class:`ProtocolError` (or a ``UserError``, ``KeyError``, ``ValueError``) does too.

Each refusal counts in the owner's :class:`~.limits.GuardStats`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable

from ..errors import UserError
from .limits import ControlLimits, GuardStats, TokenBucket
from .localsock import SocketAccess, bind_control_socket, peer_allowed
from .protocol import SKIP_LIMIT_BYTES, ProtocolError, encode, error_message, next_valid_message

__all__ = ["ControlClient", "ControlServer"]

log = logging.getLogger("mfsched.control")


class ControlClient:
    """One connected client, and what its handler keeps about it."""

    __slots__ = ("bucket", "pending_flows", "server", "throttled", "writer")

    def __init__(self, writer: asyncio.StreamWriter, bucket: TokenBucket) -> None:
        self.writer = writer
        self.bucket = bucket
        self.throttled = False
        self.pending_flows = 0  # the daemon: submitted by this client, not completed yet
        self.server = -1  # the coordinator: which daemon this is (after its hello)


class ControlServer:
    def __init__(self, path: str, accept: frozenset[str],
                 handle: Callable[[dict, ControlClient], None], *, guard: GuardStats,
                 limits: ControlLimits | None = None, access: SocketAccess | None = None,
                 on_close: Callable[[ControlClient], None] | None = None,
                 stop_on: frozenset[str] = frozenset({"shutdown"})) -> None:
        self.path = path
        self.accept = accept
        self.handle = handle
        self.guard = guard
        self.limits = limits or ControlLimits()
        self.access = access or SocketAccess()
        self.on_close = on_close
        self.stop_on = stop_on
        self.clients: set[ControlClient] = set()
        self.messages = 0
        self.errors = 0
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        sock = bind_control_socket(self.path, self.access)
        self._server = await asyncio.start_unix_server(self._serve, sock=sock,
                                                       limit=SKIP_LIMIT_BYTES)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for c in list(self.clients):
            c.writer.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def send(self, client: ControlClient, msg: dict) -> bool:
        """Write ``msg`` to ``client``; False if it is gone (or was dropped for not reading)."""
        w = client.writer
        if w.transport.is_closing():
            return False
        if w.transport.get_write_buffer_size() > self.limits.max_backlog_bytes:
            self.guard.backlog_dropped += 1
            log.warning("dropping a control client that does not read its replies "
                        "(%d bytes unread)", w.transport.get_write_buffer_size())
            w.transport.abort()
            return False
        try:
            w.write(encode(msg))
        except (ConnectionError, OSError, RuntimeError):
            return False
        return True

    def reject(self, client: ControlClient, reason: str, kind: str | None = None) -> None:
        self.errors += 1
        log.warning("rejected a message: %s", reason)
        self.send(client, error_message(reason, kind))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        lim = self.limits
        client = ControlClient(writer, TokenBucket(lim.messages_per_s, lim.burst_messages,
                                                   loop.time()))
        refusal = None
        if len(self.clients) >= lim.max_clients:
            self.guard.clients_refused += 1
            refusal = f"too many clients (limit {lim.max_clients})"
        elif not peer_allowed(writer.get_extra_info("socket"), self.access):
            self.guard.peers_refused += 1
            refusal = "this socket serves its owner only"
        if refusal is not None:
            log.warning("refused a control client: %s", refusal)
            self.send(client, error_message(refusal))
            writer.close()
            return
        self.clients.add(client)
        try:
            while (msg := await next_valid_message(
                    reader, self.accept, lambda why: self.reject(client, why))) is not None:
                self.messages += 1
                wait_s = client.bucket.take(loop.time())
                if wait_s > 0:
                    if not client.throttled:
                        client.throttled = True
                        self.guard.throttled += 1
                        self.reject(client, f"more than {lim.messages_per_s:g} messages/s: "
                                            "reading more slowly")
                    await asyncio.sleep(wait_s)
                else:
                    client.throttled = False
                try:
                    self.handle(msg, client)
                except (ProtocolError, UserError, KeyError, ValueError) as e:
                    self.reject(client, f"{msg['type']}: {e}", msg["type"])
                if msg["type"] in self.stop_on:
                    break
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:  # shutting down (Python 3.11 would log it otherwise)
            pass
        finally:
            self.clients.discard(client)
            if self.on_close is not None:
                self.on_close(client)
            writer.close()
