"""The run key, the handshake and sealed frames (pure: no sockets)."""

from __future__ import annotations

import os

import pytest

from mfsched.dataplane.auth import (
    CLIENT_AUTH,
    TAG_BYTES,
    AuthError,
    ClientHandshake,
    RunKey,
    ServerHandshake,
)
from mfsched.errors import UserError


def _pair(client_key, server_key, hw_class=3):
    client, server = ClientHandshake(client_key, hw_class), ServerHandshake(server_key)
    reply = server.respond(client.hello)
    auth, cs = client.finish(reply)
    return cs, server.finish(auth)


def test_the_key_is_never_shown():
    key = RunKey.generate()
    assert key.export_hex() not in repr(key) and key.export_hex() not in str(key)
    assert repr(key) == "RunKey(<hidden>)"


def test_key_file_must_be_private_and_well_formed(tmp_path):
    key = RunKey.generate()
    path = tmp_path / "key"
    path.write_text(key.export_hex() + "\n")
    path.chmod(0o600)
    assert RunKey.from_file(str(path)).export_hex() == key.export_hex()
    path.chmod(0o640)
    with pytest.raises(UserError, match="readable or writable by others"):
        RunKey.from_file(str(path))
    path.chmod(0o600)
    path.write_text("abc")
    with pytest.raises(UserError, match="expected 64 hex digits"):
        RunKey.from_file(str(path))
    with pytest.raises(UserError, match="cannot open"):
        RunKey.from_file(str(tmp_path / "missing"))
    if os.geteuid() == 0:  # only root can give a file away
        path.write_text(key.export_hex())
        os.chown(path, 65534, -1)
        with pytest.raises(UserError, match="owned by uid 65534"):
            RunKey.from_file(str(path))


def test_key_from_a_pipe_and_the_descriptor_is_closed():
    key = RunKey.generate()
    r, w = os.pipe()
    os.write(w, key.export_hex().encode())
    os.close(w)
    assert RunKey.from_fd(r).export_hex() == key.export_hex()
    with pytest.raises(OSError):
        os.fstat(r)


def test_handshake_gives_both_sides_matching_sealed_channels():
    key = RunKey.generate()
    cs, ss = _pair(key, key, hw_class=5)
    assert cs.authenticated and ss.authenticated and ss.hw_class == 5
    header, payload = b"h" * 47, os.urandom(1000)
    seq = cs.sealer.next_seq()
    sealed = cs.sealer.frame(seq, header, payload)[len(header):]
    assert len(sealed) == len(payload) + TAG_BYTES and payload not in sealed  # encrypted
    assert ss.opener.open(seq, header, sealed) == payload
    ack = b"a" * 36
    aseq = ss.sealer.next_seq()
    assert cs.opener.open(aseq, ack, ss.sealer.frame(aseq, ack, b"")[len(ack):]) == b""


def test_sealed_frames_refuse_tampering_replay_and_other_connections():
    key = RunKey.generate()
    cs, ss = _pair(key, key)
    _, ss2 = _pair(key, key)
    header, payload = b"h" * 47, b"p" * 100
    f0 = bytes(cs.sealer.frame(cs.sealer.next_seq(), header, payload)[len(header):])
    assert ss.opener.open(0, header, f0) == payload
    with pytest.raises(AuthError) as e:  # the same frame again: authentic but old
        ss.opener.open(0, header, f0)
    assert e.value.kind == "replayed"
    f1 = bytes(cs.sealer.frame(cs.sealer.next_seq(), header, payload)[len(header):])
    with pytest.raises(AuthError) as e:  # header altered (say, the offset)
        ss.opener.open(1, b"H" + header[1:], f1)
    assert e.value.kind == "bad_mac"
    bad = bytearray(f1)
    bad[3] ^= 1
    with pytest.raises(AuthError) as e:  # payload altered
        ss.opener.open(1, header, bytes(bad))
    assert e.value.kind == "bad_mac"
    with pytest.raises(AuthError) as e:  # a frame of another connection with the same key
        ss2.opener.open(1, header, f1)
    assert e.value.kind == "bad_mac"
    assert ss.opener.open(1, header, f1) == payload  # the genuine frame still opens


def test_a_peer_without_the_key_cannot_finish_a_handshake():
    key, other = RunKey.generate(), RunKey.generate()
    with pytest.raises(AuthError) as e:  # the client checks the server's proof first
        _pair(other, key)
    assert e.value.kind == "bad_tag"
    server = ServerHandshake(key)
    server.respond(ClientHandshake(other, 2).hello)
    with pytest.raises(AuthError) as e:  # a forged client tag
        server.finish(CLIENT_AUTH.pack(b"MFSA", os.urandom(32)))
    assert e.value.kind == "bad_tag"


def test_a_captured_handshake_is_worthless_on_a_new_connection():
    key = RunKey.generate()
    client, server = ClientHandshake(key, 1), ServerHandshake(key)
    auth, _ = client.finish(server.respond(client.hello))
    server.finish(auth)
    replay = ServerHandshake(key)  # a fresh server nonce
    replay.respond(client.hello)
    with pytest.raises(AuthError) as e:
        replay.finish(auth)
    assert e.value.kind == "bad_tag"


def test_both_sides_must_agree_on_authentication():
    key = RunKey.generate()
    with pytest.raises(AuthError) as e:
        ServerHandshake(key).respond(ClientHandshake(None, 1).hello)
    assert e.value.kind == "mode" and "authentication required" in str(e.value)
    with pytest.raises(AuthError) as e:
        ServerHandshake(None).respond(ClientHandshake(key, 1).hello)
    assert e.value.kind == "mode"
    with pytest.raises(AuthError) as e:
        ServerHandshake(key).respond(b"GET / HTTP/1.1\r\nHost: example.org\r\n\r\n"[:39])
    assert e.value.kind == "malformed"
    with pytest.raises(AuthError) as e:
        ServerHandshake(key).respond(b"short")
    assert e.value.kind == "malformed"


def test_without_a_key_frames_are_plain_but_numbered():
    cs, ss = _pair(None, None)
    assert not cs.authenticated and cs.sealer.tag_bytes == 0
    assert ss.opener.open(0, b"h", cs.sealer.frame(cs.sealer.next_seq(), b"h", b"x")[1:]) == b"x"
    with pytest.raises(AuthError) as e:
        ss.opener.open(0, b"h", b"x")
    assert e.value.kind == "replayed"
