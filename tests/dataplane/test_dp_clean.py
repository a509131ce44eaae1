"""`mfsched net clean` removes only the namespaces whose owning run is gone (issue 14).

Root + namespaces. The test owns every name it makes: fabric tags start with ``t14`` (random
tags are hex digits, so no other run's can), addresses are the fabric's 198.18.0.0/15, and
everything it made is deleted at the end whatever happens.
"""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import textwrap

import pytest

from mfsched.dataplane.netns import (
    OWNER_DIR,
    FabricSpec,
    clean,
    fabric,
    list_namespaces,
    owner_of,
)

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("netns_ok")]

PREFIX = "mfs-t14"


def _mfsched(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mfsched", *args], capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def tags():
    """Three fresh tags (a killed run, a live run, no owner) and the cleanup of all three."""
    suffix = secrets.token_hex(1)
    made = {"dead": f"t14d{suffix}", "live": f"t14l{suffix}", "none": f"t14u{suffix}"}
    yield made
    for ns in list_namespaces(PREFIX):
        if any(ns.startswith(f"mfs-{t}-") for t in made.values()):
            subprocess.run(["ip", "netns", "del", ns], check=False)
    for t in made.values():
        (OWNER_DIR / f"{t}.json").unlink(missing_ok=True)


def _killed_run(tag: str) -> None:
    """A process that builds a fabric and is killed (SIGKILL) while it holds it."""
    code = textwrap.dedent(f"""
        import time
        from mfsched.dataplane.netns import FabricSpec, fabric
        with fabric(FabricSpec(servers=1, tag={tag!r})):
            print("up", flush=True)
            time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "up"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)  # reaped: its pid is gone


def test_clean_keeps_live_and_ownerless_namespaces_unless_forced(tags):
    _killed_run(tags["dead"])
    dead = {f"mfs-{tags['dead']}-h0", f"mfs-{tags['dead']}-sw"}
    assert dead <= set(list_namespaces(PREFIX))
    assert owner_of(f"mfs-{tags['dead']}-sw")[1] is False
    ownerless = f"mfs-{tags['none']}-h0"
    subprocess.run(["ip", "netns", "add", ownerless], check=True)
    assert owner_of(ownerless) is None
    with fabric(FabricSpec(servers=1, tag=tags["live"])) as live:
        assert owner_of(live.switch_ns)[1] is True

        res = _mfsched("net", "clean", "--prefix", PREFIX)
        assert res.returncode == 0, res.stderr
        left = set(list_namespaces(PREFIX))
        assert not dead & left  # the killed run's namespaces are gone ...
        assert not (OWNER_DIR / f"{tags['dead']}.json").exists()  # ... and its record
        for ns in dead:
            assert f"deleted {ns}" in res.stdout
        assert set(live.namespaces) | {ownerless} <= left  # the live run's and the ownerless
        assert f"kept {live.switch_ns}: its run is still alive" in res.stdout
        assert f"kept {ownerless}: no owner recorded" in res.stdout

        forced = clean(PREFIX, force=True)
        assert set(live.namespaces) | {ownerless} <= set(forced.deleted)
        assert not set(live.namespaces) & set(list_namespaces(PREFIX))
    assert not (OWNER_DIR / f"{tags['live']}.json").exists()  # teardown forgot the owner
