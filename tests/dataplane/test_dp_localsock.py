"""Control sockets: explicit permissions, checked paths, peer credentials, client limits."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import subprocess
import sys
import time

import pytest
from conftest import Client

from mfsched.dataplane.control import ControlServer
from mfsched.dataplane.limits import ControlLimits, GuardStats
from mfsched.dataplane.localsock import SocketAccess, bind_control_socket
from mfsched.errors import UserError

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")


def test_socket_is_created_private(tmp_path):
    path = str(tmp_path / "d.sock")
    old = os.umask(0)  # even with a permissive umask
    try:
        sock = bind_control_socket(path, SocketAccess())
    finally:
        os.umask(old)
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.geteuid()
    sock.close()


def test_group_mode(tmp_path):
    path = str(tmp_path / "d.sock")
    access = SocketAccess("root")
    sock = bind_control_socket(path, access)
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == 0
    sock.close()
    with pytest.raises(UserError, match="--socket-group: no group named 'no-such-group-x'"):
        SocketAccess("no-such-group-x")


def test_unsafe_paths_are_refused(tmp_path):
    f = tmp_path / "file"
    f.write_text("keep me")
    with pytest.raises(UserError, match="exists and is not a socket"):
        bind_control_socket(str(f), SocketAccess())
    assert f.read_text() == "keep me"
    live = bind_control_socket(str(tmp_path / "live.sock"), SocketAccess())
    with pytest.raises(UserError, match="another process is serving"):
        bind_control_socket(str(tmp_path / "live.sock"), SocketAccess())
    live.close()  # now stale: replaced
    bind_control_socket(str(tmp_path / "live.sock"), SocketAccess()).close()
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(UserError, match=r"writable by others .* without the sticky bit"):
        bind_control_socket(str(shared / "d.sock"), SocketAccess())
    shared.chmod(0o1777)
    bind_control_socket(str(shared / "d.sock"), SocketAccess()).close()


@root_only
def test_a_socket_of_another_user_is_not_replaced(tmp_path):
    path = tmp_path / "d.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()
    os.chown(path, 65534, -1)
    with pytest.raises(UserError, match="belongs to uid 65534"):
        bind_control_socket(str(path), SocketAccess())
    assert path.exists()


@root_only
def test_daemon_refuses_to_start_on_it_with_a_one_line_error(tmp_path):
    path = tmp_path / "d.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()
    os.chown(path, 65534, -1)
    proc = subprocess.run([sys.executable, "-m", "mfsched.dataplane.daemon", "--server", "0",
                           "--socket", str(path), "--no-auth", "--address-base", "127.0",
                           "--port", "0"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"mfsched daemon: error: {path}: socket belongs to uid 65534, not to this user "
        f"({os.geteuid()}); refusing to replace it"]


def test_daemon_needs_a_key_or_no_auth(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mfsched.dataplane.daemon", "--server", "0",
                           "--socket", str(tmp_path / "d.sock")], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "give the run's key (--key-file or --key-fd) or --no-auth" in proc.stderr
    key = tmp_path / "key"
    key.write_text("00" * 32)
    key.chmod(0o644)
    proc = subprocess.run([sys.executable, "-m", "mfsched.dataplane.daemon", "--server", "0",
                           "--socket", str(tmp_path / "d.sock"), "--key-file", str(key)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{key}: readable or writable by others (mode 0644)" in proc.stderr


class _Served:
    """A ControlServer on a background loop that echoes every message."""

    def __init__(self, path: str, limits: ControlLimits) -> None:
        import threading

        self.guard = GuardStats()
        self.handled: list[dict] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        def handle(msg, client):
            self.handled.append(msg)
            self.server.send(client, {"type": "stats_reply", "stats": []})

        self.server = ControlServer(path, frozenset({"stats", "hello"}), handle,
                                    guard=self.guard, limits=limits)
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def test_client_limit_and_message_rate(tmp_path):
    path = str(tmp_path / "c.sock")
    served = _Served(path, ControlLimits(max_clients=2, messages_per_s=200.0,
                                         burst_messages=20))
    try:
        a, b = Client(path), Client(path)
        a.send({"type": "stats"})
        a.recv_type("stats_reply")
        b.send({"type": "stats"})
        b.recv_type("stats_reply")
        c = Client(path)
        assert "too many clients (limit 2)" in c.recv_type("error")["reason"]
        assert served.guard.clients_refused == 1
        t0 = time.monotonic()
        for _ in range(60):
            a.send({"type": "stats"})
        replies, notices = 0, 0
        while replies < 60:
            msg = a.recv()
            replies += msg["type"] == "stats_reply"
            notices += msg["type"] == "error" and "messages/s: reading more slowly" in \
                msg["reason"]
        elapsed = time.monotonic() - t0
        # 20 at once, the other 40 at 200/s: at least 0.2 s; every message was served; each
        # episode of throttling was announced (more than one if the client paused in between)
        assert elapsed >= 0.19 and notices == served.guard.throttled >= 1
        assert len(served.handled) == 62
    finally:
        served.close()


def test_a_client_that_does_not_read_its_replies_is_dropped(tmp_path):
    path = str(tmp_path / "c.sock")
    served = _Served(path, ControlLimits(max_backlog_bytes=64 * 1024))
    try:
        c = Client(path)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        msg = b'\x00\x00\x00\x10{"type":"stats"}'
        with pytest.raises(OSError):  # the server hangs up on us at some point
            for _ in range(200_000):
                c.send_raw(msg * 100)
        assert served.guard.backlog_dropped == 1
    finally:
        served.close()


@root_only
def test_a_client_of_another_user_is_refused():
    import shutil
    import tempfile

    where = tempfile.mkdtemp(prefix="mfs-sock-")  # under /tmp: other users can reach it
    os.chmod(where, 0o755)
    path = os.path.join(where, "c.sock")
    served = _Served(path, ControlLimits())
    try:
        os.chmod(path, 0o666)  # someone loosened the permissions: SO_PEERCRED still holds
        child = ("import os, socket; os.setgid(65534); os.setuid(65534); "
                 f"s = socket.socket(socket.AF_UNIX); s.connect({path!r}); s.settimeout(10); "
                 "print(s.recv(4096)[4:].decode())")
        out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                             timeout=30)
        assert "serves its owner only" in out.stdout, out.stderr
        assert served.guard.peers_refused == 1 and not served.handled
    finally:
        served.close()
        shutil.rmtree(where, ignore_errors=True)
