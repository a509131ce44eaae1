"""Unix control sockets with explicit permissions, checked before a daemon starts serving.

Used by :mod:`.control`, i.e. by every daemon and the coordinator. The socket file is created
with mode 0600 (or 0660 and a configured group) while the process umask forbids anything wider,
so there is no moment in which another user could connect; then mode, owner and group are read
back and checked. Before that the path is examined, and the daemon refuses to start (a
:class:`~mfsched.errors.UserError`: one line, exit code 2) when

* the directory is writable by others without the sticky bit (anyone could replace the socket),
* something that is not a socket is there (it is never deleted),
* a socket owned by another user is there, or
* a live server answers on it (another daemon uses the path).

A stale socket of this user (its daemon died) is replaced. Each accepted client is checked
with ``SO_PEERCRED``: with mode 0600 only this user and root may talk; with a group, the kernel
already checked the group permission on the file (including supplementary groups, which
``SO_PEERCRED`` does not show), so any client that got through is served.
"""

from __future__ import annotations

import contextlib
import grp
import os
import socket
import stat
import struct

from ..errors import UserError

__all__ = ["SocketAccess", "bind_control_socket", "peer_allowed"]

_UCRED = struct.Struct("3i")  # pid, uid, gid


class SocketAccess:
    """Who may connect: the owner only (mode 0600), or also one group (mode 0660)."""

    def __init__(self, group: str | None = None) -> None:
        self.group = group
        self.gid: int | None = None
        if group is not None:
            try:
                self.gid = grp.getgrnam(group).gr_gid
            except KeyError:
                raise UserError(f"no group named {group!r}", where="--socket-group") from None

    @property
    def mode(self) -> int:
        return 0o600 if self.gid is None else 0o660


def _check_directory(path: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    try:
        st = os.stat(parent)
    except OSError as e:
        raise UserError(f"directory {parent}: {e.strerror}", where=path) from None
    if st.st_uid not in (os.geteuid(), 0):
        raise UserError(f"directory {parent} belongs to uid {st.st_uid}", where=path)
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise UserError(f"directory {parent} is writable by others (mode "
                        f"{stat.S_IMODE(st.st_mode):04o}) without the sticky bit",
                        where=path)


def _clear_path(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise UserError("exists and is not a socket; refusing to replace it", where=path)
    if st.st_uid != os.geteuid():
        raise UserError(f"socket belongs to uid {st.st_uid}, not to this user "
                        f"({os.geteuid()}); refusing to replace it", where=path)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError:
        pass  # stale: nobody listens
    else:
        raise UserError("another process is serving on this socket", where=path)
    finally:
        probe.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def bind_control_socket(path: str, access: SocketAccess) -> socket.socket:
    """A listening Unix socket at ``path`` with exactly ``access.mode``; UserError if the path
    is not safe to use (see the module docstring)."""
    _check_directory(path)
    _clear_path(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177 if access.gid is None else 0o117)
    try:
        sock.bind(path)
    except OSError as e:
        sock.close()
        raise UserError(f"cannot create the socket: {e.strerror}", where=path) from None
    finally:
        os.umask(old)
    try:
        if access.gid is not None:
            os.chown(path, -1, access.gid)
        os.chmod(path, access.mode)
        st = os.lstat(path)
    except OSError as e:
        sock.close()
        raise UserError(f"cannot set the socket's permissions: {e.strerror}",
                        where=path) from None
    if (stat.S_IMODE(st.st_mode) != access.mode or st.st_uid != os.geteuid()
            or (access.gid is not None and st.st_gid != access.gid)):
        sock.close()
        raise UserError(f"socket has mode {stat.S_IMODE(st.st_mode):04o}, uid {st.st_uid}, "
                        f"gid {st.st_gid} after creation", where=path)
    sock.listen(128)
    sock.setblocking(False)
    return sock


def peer_allowed(sock: socket.socket | None, access: SocketAccess) -> bool:
    """Whether the client on ``sock`` may use the socket (see the module docstring)."""
    if access.gid is not None:
        return True
    if sock is None:
        return False
    try:
        _, uid, _ = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                  _UCRED.size))
    except OSError:
        return False
    return uid in (os.geteuid(), 0)
