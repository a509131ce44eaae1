"""A hostile data-plane peer: every way of talking to a daemon's data port that must fail.

Used by the receiver tests (``test_dp_receiver.py``: one attack at a time against a transport
on loopback, exact counters) and by the hostile-host test (``test_dp_hostile.py``: run as a
script inside its own network namespace while a legitimate transfer goes on; it prints one JSON
report). Blocking sockets only; nothing here is part of mfsched.

Two kinds of attacker: an **outsider** without the run key (forged handshakes and chunks, raw
frames, replays of captured traffic, garbage, truncated and trickled handshakes, floods of idle
connections from several addresses), and an **insider** that holds the key (a compromised or
buggy peer: frames with a bad tag, a replayed frame, oversize, truncated and stalled frames,
too many connections, a captured frame of another connection inside its own).

    python hostile.py --target ADDR --port P [--key-file K] [--capture-from ADDR --iface DEV]
                      [--bind ADDR,...] [--flood N] [--trickle-s S] [--stall-s S]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import selectors
import socket
import struct
import sys
import time

from mfsched.dataplane.auth import (
    CLIENT_AUTH,
    CLIENT_HELLO,
    SERVER_HELLO,
    TAG_BYTES,
    ClientHandshake,
    RunKey,
    Session,
)
from mfsched.dataplane.wire import (
    ACK_FRAME,
    DATA_HEADER,
    ERROR_HEAD,
    KIND_DATA,
    MAGIC,
    ChunkKey,
    PayloadPattern,
)

PATTERN = PayloadPattern()
INSIDER_FLOW = 1 << 40  # flow ids of the insider's own chunks (never used by the victim run)


# --- one connection ---------------------------------------------------------------------------


class Peer:
    def __init__(self, target: str, port: int, src: str | None = None,
                 timeout_s: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(timeout_s)
        if src:
            self.sock.bind((src, 0))
        self.sock.connect((target, port))
        self.session: Session | None = None

    def handshake(self, key: RunKey | None, hw_class: int = 3) -> bool:
        """The client side of the handshake; False if the receiver refused."""
        hs = ClientHandshake(key, hw_class)
        self.sock.sendall(hs.hello)
        reply = self.recv_exact(SERVER_HELLO.size)
        if reply is None or reply[:4] != b"MFSS":
            return False
        auth, self.session = hs.finish(reply)
        self.sock.sendall(auth)
        return True

    def forged_handshake(self) -> None:
        """Handshake as if we had a key: a hello, then a tag made up."""
        self.sock.sendall(ClientHandshake(RunKey.generate(), 3).hello)
        self.recv_exact(SERVER_HELLO.size)
        self.sock.sendall(CLIENT_AUTH.pack(b"MFSA", os.urandom(32)))

    def frame(self, key: ChunkKey, total: int, *, seq: int | None = None,
              tamper: bool = False) -> bytes:
        """A data frame of the real payload; sealed if we have a session; ``tamper`` flips a
        byte of the payload after sealing (what an on-path attacker would send)."""
        s = self.session
        if seq is None:
            seq = s.sealer.next_seq() if s else 0
        payload = bytes(PATTERN.chunk(key))
        authenticated = s is not None and s.authenticated
        header = DATA_HEADER.pack(MAGIC, KIND_DATA, seq, key.flow_id, key.member, key.offset,
                                  key.length, total, 0 if authenticated else _crc(payload))
        frame = s.sealer.frame(seq, header, payload) if s else header + payload
        if tamper:
            frame[len(header)] ^= 0xFF
        return bytes(frame)

    def recv_exact(self, n: int) -> bytes | None:
        data = b""
        while len(data) < n:
            try:
                part = self.sock.recv(n - len(data))
            except (ConnectionError, TimeoutError, OSError):
                return None
            if not part:
                return None
            data += part
        return data

    def closed_with(self, timeout_s: float = 10.0) -> str | None:
        """Read until the receiver closes; its error frame's reason (None if it said none)."""
        self.sock.settimeout(timeout_s)
        data = b""
        with contextlib.suppress(ConnectionError, TimeoutError, OSError):
            while part := self.sock.recv(65536):
                data += part
        i = data.find(MAGIC + bytes([3]))
        if i < 0 or len(data) < i + ERROR_HEAD.size:
            return None
        _, _, n = ERROR_HEAD.unpack_from(data, i)
        return data[i + ERROR_HEAD.size:i + ERROR_HEAD.size + n].decode("utf-8", "replace")

    def close(self) -> None:
        self.sock.close()


def _crc(data: bytes) -> int:
    import zlib

    return zlib.crc32(data)


# --- outsider -----------------------------------------------------------------------------------


def forged_chunks(target: str, port: int, n: int = 3) -> list[str | None]:
    """Handshakes with made-up tags, each followed by a chunk we cannot seal properly."""
    reasons = []
    for i in range(n):
        p = Peer(target, port)
        p.forged_handshake()
        with contextlib.suppress(OSError):
            p.sock.sendall(p.frame(ChunkKey(INSIDER_FLOW + i, 0, 0, 1024), 1024))
        reasons.append(p.closed_with())
        p.close()
    return reasons


def raw_frames(target: str, port: int) -> str | None:
    """A data frame with no handshake at all."""
    p = Peer(target, port)
    p.sock.sendall(p.frame(ChunkKey(INSIDER_FLOW, 0, 0, 4096), 4096))
    reason = p.closed_with()
    p.close()
    return reason


def replay_stream(target: str, port: int, captured: bytes) -> str | None:
    """Send a captured connection's bytes again, verbatim, on a new connection."""
    p = Peer(target, port)
    with contextlib.suppress(OSError):
        p.sock.sendall(captured)
    reason = p.closed_with()
    p.close()
    return reason


def garbage(target: str, port: int, size_bytes: int = 4 << 20) -> str | None:
    """Megabytes of nonsense as fast as the socket takes them."""
    p = Peer(target, port)
    with contextlib.suppress(OSError):
        p.sock.sendall(os.urandom(size_bytes))
    reason = p.closed_with()
    p.close()
    return reason


def truncated_hello(target: str, port: int) -> None:
    """Half a hello, then the end of our stream (and wait until the receiver has seen it)."""
    p = Peer(target, port)
    p.sock.sendall(ClientHandshake(None, 3).hello[:CLIENT_HELLO.size // 2])
    p.sock.shutdown(socket.SHUT_WR)
    p.closed_with()
    p.close()


def trickle(target: str, port: int, interval_s: float) -> tuple[int, float, str | None]:
    """A hello one byte at a time; (bytes sent, seconds until the receiver closed, reason)."""
    import select

    p = Peer(target, port)
    hello, sent, t0 = ClientHandshake(None, 3).hello, 0, time.monotonic()
    try:
        for b in hello:
            if select.select([p.sock], [], [], interval_s)[0]:
                break  # the receiver spoke (or closed): stop and read
            p.sock.sendall(bytes([b]))
            sent += 1
    except OSError:
        pass
    reason = p.closed_with()
    p.close()
    return sent, time.monotonic() - t0, reason


def idle_flood(target: str, port: int, n: int, sources: list[str],
               hold_s: float = 30.0) -> dict[str, int]:
    """Open ``n`` connections (round robin over ``sources``), send nothing, hold each until the
    receiver closes it. Returns how many were established and how each one ended."""
    sel = selectors.DefaultSelector()
    socks, established = [], 0
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((sources[i % len(sources)], 0))
        s.settimeout(5.0)
        try:
            s.connect((target, port))
        except OSError:
            s.close()
            continue
        established += 1
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        socks.append(s)
    ended = {"refused": 0, "evicted": 0, "timeout": 0, "other": 0}
    left, deadline = len(socks), time.monotonic() + hold_s
    while left and time.monotonic() < deadline:
        for k, _ in sel.select(timeout=0.5):
            try:
                data = k.fileobj.recv(4096)
            except OSError:
                data = b""
            if data and not data.startswith(MAGIC):
                continue  # not expected: a server hello would mean we spoke first
            text = data[ERROR_HEAD.size:].decode("utf-8", "replace")
            kind = ("evicted" if "oldest" in text else "timeout" if "in time" in text
                    else "refused" if "connections" in text or "descriptors" in text
                    else "other")
            ended[kind] += 1
            sel.unregister(k.fileobj)
            k.fileobj.close()
            left -= 1
    for s in socks:
        with contextlib.suppress(Exception):
            s.close()
    return {"established": established, "still_open": left, **ended}


# --- insider (holds the run key) ----------------------------------------------------------------


def insider_good_chunk(target: str, port: int, key: RunKey) -> tuple[int, bytes]:
    """One valid chunk (delivered: the insider is a legitimate peer here), then the same frame
    again: a replay. Returns (bytes delivered, the frame) and the reason the receiver gave."""
    p = Peer(target, port)
    assert p.handshake(key)
    chunk = ChunkKey(INSIDER_FLOW + 100, 0, 0, 2048)
    frame = p.frame(chunk, 2048)
    p.sock.sendall(frame)
    ack = p.recv_exact(ACK_FRAME.size + TAG_BYTES)
    p.sock.sendall(frame)
    reason = p.closed_with()
    p.close()
    return (2048 if ack is not None else 0), reason


def insider_bad_mac(target: str, port: int, key: RunKey) -> str | None:
    p = Peer(target, port)
    assert p.handshake(key)
    p.sock.sendall(p.frame(ChunkKey(INSIDER_FLOW + 200, 0, 0, 4096), 4096, tamper=True))
    reason = p.closed_with()
    p.close()
    return reason


def insider_foreign_frames(target: str, port: int, key: RunKey, frames: bytes) -> str | None:
    """Frames captured from another connection, inside our own authenticated one."""
    p = Peer(target, port)
    assert p.handshake(key)
    with contextlib.suppress(OSError):
        p.sock.sendall(frames)
    reason = p.closed_with()
    p.close()
    return reason


def insider_oversize(target: str, port: int, key: RunKey) -> str | None:
    p = Peer(target, port)
    assert p.handshake(key)
    header = DATA_HEADER.pack(MAGIC, KIND_DATA, 0, INSIDER_FLOW + 300, 0, 0, 1 << 30,
                              1 << 30, 0)
    p.sock.sendall(header + b"\0" * 4096)
    reason = p.closed_with()
    p.close()
    return reason


def insider_truncated(target: str, port: int, key: RunKey) -> None:
    p = Peer(target, port)
    assert p.handshake(key)
    frame = p.frame(ChunkKey(INSIDER_FLOW + 400, 0, 0, 8192), 8192)
    p.sock.sendall(frame[:len(frame) // 2])
    p.sock.shutdown(socket.SHUT_WR)
    p.closed_with()
    p.close()


def insider_stall(target: str, port: int, key: RunKey) -> tuple[float, str | None]:
    """Half a frame, then nothing: (seconds until the receiver closed, reason)."""
    p = Peer(target, port)
    assert p.handshake(key)
    frame = p.frame(ChunkKey(INSIDER_FLOW + 500, 0, 0, 8192), 8192)
    t0 = time.monotonic()
    p.sock.sendall(frame[:100])
    reason = p.closed_with(timeout_s=60)
    p.close()
    return time.monotonic() - t0, reason


def insider_many_connections(target: str, port: int, key: RunKey, n: int) -> dict[str, int]:
    """``n`` authenticated connections at once: how many handshakes succeeded."""
    peers, ok, refused = [], 0, 0
    for _ in range(n):
        p = Peer(target, port)
        if p.handshake(key):
            ok += 1
            peers.append(p)
        else:
            refused += 1
            p.close()
    for p in peers:
        p.close()
    return {"authenticated": ok, "refused": refused}


# --- capture (inside the hostile namespace, of traffic mirrored to it) --------------------------


def sniffer(iface: str) -> socket.socket:
    """A packet socket that sees every frame on ``iface``, whoever it is addressed to."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    s.bind((iface, 0))
    s.settimeout(0.5)
    return s


def capture(s: socket.socket, src: str, port: int, want_bytes: int, timeout_s: float) -> bytes:
    """The first ``want_bytes`` a client at ``src`` sent on some connection to ``port`` that
    carried that much, reassembled from the packets the sniffer ``s`` sees."""
    src_ip = socket.inet_aton(src)
    isn: dict[int, int] = {}
    segs: dict[int, dict[int, bytes]] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            pkt = s.recv(65535)
        except TimeoutError:
            continue
        if len(pkt) < 54 or pkt[12:14] != b"\x08\x00" or pkt[23] != 6 or pkt[26:30] != src_ip:
            continue
        ihl = (pkt[14] & 0x0F) * 4
        tcp = 14 + ihl
        sport, dport, seq = struct.unpack_from("!HHI", pkt, tcp)
        if dport != port:
            continue
        flags = pkt[tcp + 13]
        total_len = struct.unpack_from("!H", pkt, 16)[0]
        payload = pkt[tcp + (pkt[tcp + 12] >> 4) * 4:14 + total_len]
        if flags & 0x02:  # SYN
            isn[sport] = seq
            segs[sport] = {}
            continue
        if sport not in isn or not payload:
            continue
        segs[sport][(seq - isn[sport] - 1) % (1 << 32)] = payload
        stream = _contiguous(segs[sport])
        if len(stream) >= want_bytes:
            s.close()
            return stream[:want_bytes]
    s.close()
    return b""


def _contiguous(segs: dict[int, bytes]) -> bytes:
    out, pos = b"", 0
    while pos in segs:
        out += segs[pos]
        pos += len(segs[pos])
    return out


# --- as a script (the hostile-host test) ---------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--key-file", help="the run key: play the insider too")
    ap.add_argument("--capture-from", help="legitimate sender whose mirrored traffic to sniff")
    ap.add_argument("--iface", default="n0")
    ap.add_argument("--bind", default="", help="extra source addresses for the flood")
    ap.add_argument("--flood", type=int, default=2000)
    ap.add_argument("--trickle-s", type=float, default=0.2)
    a = ap.parse_args()
    t, port = a.target, a.port
    report: dict = {}
    sniff = sniffer(a.iface) if a.capture_from else None
    print("ready", flush=True)  # (sniffing already: the first legitimate SYN is not missed)
    if sniff is not None:
        captured = capture(sniff, a.capture_from, port, 64 * 1024, 30.0)
        report["captured_bytes"] = len(captured)
        report["replay"] = replay_stream(t, port, captured)
    report["forged"] = forged_chunks(t, port, 3)
    report["raw"] = raw_frames(t, port)
    report["garbage"] = garbage(t, port)
    truncated_hello(t, port)
    sources = [x for x in a.bind.split(",") if x]
    report["flood"] = idle_flood(t, port, a.flood, sources or [""])
    report["trickle"] = trickle(t, port, a.trickle_s)
    if a.key_file:
        key = RunKey.from_file(a.key_file)
        delivered, report["insider_replay"] = insider_good_chunk(t, port, key)
        report["insider_delivered_bytes"] = delivered
        report["insider_bad_mac"] = insider_bad_mac(t, port, key)
        if a.capture_from and len(captured) > CLIENT_HELLO.size + CLIENT_AUTH.size:
            report["insider_foreign"] = insider_foreign_frames(
                t, port, key, captured[CLIENT_HELLO.size + CLIENT_AUTH.size:])
        report["insider_oversize"] = insider_oversize(t, port, key)
        insider_truncated(t, port, key)
        report["insider_stall"] = insider_stall(t, port, key)
    json.dump(report, sys.stdout)
    print(flush=True)


if __name__ == "__main__":
    main()
