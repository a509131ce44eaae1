"""Bounds on what a peer or a local client can make a daemon hold, and the counters behind them.

Used by the data listener (:mod:`.receiver`: connections, handshakes, buffered bytes, frame
deadlines), by the receive ledger (:mod:`.wire`: open and remembered members) and by the
control sockets of the daemon and the coordinator (:mod:`.control`: clients, message rate,
pending flows, unread replies). Every limit has a counter in :class:`GuardStats`, which the
daemon reports in its ``stats`` reply (``guard.*``), and every refusal tells the offender why
(an error frame on a data connection, an ``error`` message on a control socket).

Pure accounting: no sockets, no clock (callers pass ``now``), so the rules are unit-tested
without I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

__all__ = [
    "ControlLimits",
    "DataLimits",
    "GuardStats",
    "PeerTable",
    "TokenBucket",
    "limit_options",
    "parse_limit_options",
]

# select() (the data plane's precise event loop, :mod:`.clock`) cannot watch a descriptor
# numbered 1024 or more; a connection that would get one is refused.
SELECT_FD_LIMIT = 1024
_FD_HEADROOM = 64


@dataclass(frozen=True)
class DataLimits:
    """What peers may make one daemon's data listener hold. Defaults leave room for a legitimate
    peer (one connection per local address and hardware class, reconnects, chunks of 32 KiB)
    and keep an attacker's share small."""

    max_connections_per_peer: int = 64  # per source address, in any state
    max_connections: int = 512  # all peers (select() needs descriptors below 1024)
    max_preauth_connections: int = 128  # in their handshake; a new one closes the oldest
    handshake_timeout_s: float = 5.0  # from accept to a verified CLIENT_AUTH
    frame_timeout_s: float = 10.0  # a started frame must end within this + length / rate
    frame_min_bytes_per_s: float = 4096.0  # (a starved low class still gets HTB's 8 kB/s)
    max_frame_payload_bytes: int = 1 << 20  # larger frames close the connection
    max_buffer_bytes_per_peer: int = 16 << 20  # receive buffers of all its connections
    max_open_members: int = 1 << 18  # receive ledger: members with bytes missing
    completed_memory_s: float = 120.0  # completed members are remembered this long ...
    max_completed_members: int = 1 << 17  # ... and at most this many (late duplicates)

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) <= 0:
                raise ValueError(f"{f.name} must be positive")
        if self.max_connections + _FD_HEADROOM > SELECT_FD_LIMIT:
            raise ValueError(f"max_connections must be at most {SELECT_FD_LIMIT - _FD_HEADROOM}"
                             " (the event loop uses select())")

    def frame_deadline_s(self, length_bytes: int) -> float:
        """Seconds a frame of ``length_bytes`` may take from its first to its last byte."""
        return self.frame_timeout_s + length_bytes / self.frame_min_bytes_per_s

    @staticmethod
    def descriptor_ok(fd: int) -> bool:
        return 0 <= fd < SELECT_FD_LIMIT - _FD_HEADROOM // 2


@dataclass(frozen=True)
class ControlLimits:
    """What one local client (the runtime, a probe, a test) may make a control socket hold.
    The client is already trusted by the socket's permissions: these bounds catch bugs and
    runaway clients, they are no defence against the socket's owner."""

    max_clients: int = 64
    max_pending_flows_per_client: int = 250_000  # submitted, not yet completed
    messages_per_s: float = 200_000.0  # a faster client is read more slowly (not dropped)
    burst_messages: int = 400_000
    max_backlog_bytes: int = 64 << 20  # replies written but not read: the client is dropped

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) <= 0:
                raise ValueError(f"{f.name} must be positive")


@dataclass
class GuardStats:
    """Counters of refused or cut-off traffic (``guard.*`` in the daemon's stats)."""

    connections_refused: int = 0  # over a connection limit or the descriptor limit
    preauth_evicted: int = 0  # oldest unauthenticated connection closed for a new one
    handshake_failed: int = 0  # malformed hello, wrong mode, a wrong tag, or abandoned
    handshake_timeouts: int = 0
    frame_timeouts: int = 0  # a frame did not complete in time (slow or stalled peer)
    bad_mac: int = 0  # a frame that does not authenticate: connection closed
    replayed: int = 0  # an authentic frame out of its place: connection closed
    malformed: int = 0  # impossible header (magic, kind, offsets): connection closed
    oversize: int = 0  # frame longer than the limit: connection closed
    truncated: int = 0  # connection ended inside a frame or a handshake
    buffer_refused: int = 0  # a peer's receive buffers would exceed their limit
    members_busy: int = 0  # chunk of a new member refused: too many open members
    clients_refused: int = 0  # control socket: too many clients
    peers_refused: int = 0  # control socket: a client of another user (SO_PEERCRED)
    throttled: int = 0  # control socket: episodes of a client over its message rate
    flows_refused: int = 0  # control socket: submit over the pending-flow limit
    backlog_dropped: int = 0  # control socket: client dropped for not reading its replies

    def as_pairs(self, prefix: str = "guard.") -> list[tuple[str, float]]:
        return [(prefix + k, float(v)) for k, v in self.__dict__.items()]


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    __slots__ = ("burst", "last_s", "rate", "tokens")

    def __init__(self, rate: float, burst: float, now_s: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.last_s = float(burst), now_s

    def take(self, now_s: float, n: float = 1.0) -> float:
        """Take ``n`` tokens; returns 0, or how long to wait until they would have been
        there (the tokens are taken either way, so waiting that long settles the debt)."""
        self.tokens = min(self.burst, self.tokens + (now_s - self.last_s) * self.rate)
        self.last_s = now_s
        self.tokens -= n
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


class PeerTable:
    """Connections and receive buffers per peer address, and the unauthenticated ones in order
    of arrival. Connections are any hashable objects."""

    def __init__(self, limits: DataLimits, stats: GuardStats) -> None:
        self.limits = limits
        self.stats = stats
        self.connections: dict[str, int] = {}
        self.buffers: dict[str, int] = {}
        self.total = 0
        self.preauth: dict[object, None] = {}  # insertion order = age

    def admit(self, peer: str, fd: int) -> str | None:
        """Count a new connection from ``peer``, or say why it is refused."""
        lim = self.limits
        reason = None
        if not lim.descriptor_ok(fd):
            reason = "the receiver is out of descriptors"
        elif self.total >= lim.max_connections:
            reason = f"the receiver has {lim.max_connections} connections"
        elif self.connections.get(peer, 0) >= lim.max_connections_per_peer:
            reason = f"{peer} already has {lim.max_connections_per_peer} connections"
        if reason is not None:
            self.stats.connections_refused += 1
            return reason
        self.connections[peer] = self.connections.get(peer, 0) + 1
        self.total += 1
        return None

    def start_handshake(self, conn: object) -> object | None:
        """Track ``conn`` as unauthenticated; returns the oldest one to close if there are now
        too many (it is no longer tracked)."""
        self.preauth[conn] = None
        if len(self.preauth) <= self.limits.max_preauth_connections:
            return None
        oldest = next(iter(self.preauth))
        del self.preauth[oldest]
        self.stats.preauth_evicted += 1
        return oldest

    def authenticated(self, conn: object) -> None:
        self.preauth.pop(conn, None)

    def resize_buffer(self, peer: str, old_bytes: int, new_bytes: int) -> bool:
        """Move a connection's buffer from ``old_bytes`` to ``new_bytes``; False (nothing
        changed) if the peer's buffers would exceed their limit."""
        now = self.buffers.get(peer, 0) - old_bytes + new_bytes
        if new_bytes > old_bytes and now > self.limits.max_buffer_bytes_per_peer:
            self.stats.buffer_refused += 1
            return False
        if now:
            self.buffers[peer] = now
        else:
            self.buffers.pop(peer, None)
        return True

    def release(self, conn: object, peer: str, buffer_bytes: int) -> None:
        self.preauth.pop(conn, None)
        self.resize_buffer(peer, buffer_bytes, 0)
        n = self.connections.get(peer, 0) - 1
        if n > 0:
            self.connections[peer] = n
        else:
            self.connections.pop(peer, None)
        self.total -= 1


# --- command line -------------------------------------------------------------------------------


def limit_options(data: DataLimits, control: ControlLimits) -> list[str]:
    """``--limit name=value`` arguments for every limit that differs from its default (the
    testbed runner passes its limits to the daemons this way)."""
    argv: list[str] = []
    for current, default in ((data, DataLimits()), (control, ControlLimits())):
        for f in fields(current):
            value = getattr(current, f.name)
            if value != getattr(default, f.name):
                argv += ["--limit", f"{f.name}={value!r}"]
    return argv


def parse_limit_options(items: list[str]) -> tuple[DataLimits, ControlLimits]:
    """Limits from ``name=value`` texts; UserError naming the option if one is wrong."""
    from ..errors import UserError

    changes: list[dict] = [{}, {}]
    kinds = (DataLimits, ControlLimits)
    names = [{f.name: f for f in fields(k)} for k in kinds]
    for item in items:
        name, sep, text = item.partition("=")
        which = next((i for i in (0, 1) if name in names[i]), None)
        if not sep or which is None:
            known = ", ".join(sorted(names[0]) + sorted(names[1]))
            raise UserError(f"{item!r}: expected NAME=VALUE with NAME one of {known}",
                            where="--limit")
        typ = int if isinstance(getattr(kinds[which](), name), int) else float
        try:
            changes[which][name] = typ(text)
        except ValueError:
            raise UserError(f"{name}: cannot read {text!r} as {typ.__name__}",
                            where="--limit") from None
    try:
        return DataLimits(**changes[0]), ControlLimits(**changes[1])
    except ValueError as e:
        raise UserError(str(e), where="--limit") from None
