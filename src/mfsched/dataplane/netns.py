"""The emulated fabric: host namespaces, one switch namespace, veth links, HTB priority queues.

Called by :mod:`mfsched.dataplane.testbed` (the emulated testbed), the root+netns tests and the
benchmark; ``mfsched net clean`` calls :func:`clean`. Built with the ``ip`` and ``tc`` tools of
iproute2 (``-batch`` mode, one process per namespace and tool), no new dependency.

Layout (``servers`` hosts with ``nics_per_server`` NICs each)::

    mfs-<tag>-h<h>  (one per server)          mfs-<tag>-sw  (the switch)
      n<k> 198.18.<h>.<10+k>/16  <-- veth -->    p<h>n<k>  --- bridge br0 --- other ports
      HTB on n<k> egress = NIC uplink            HTB on p<h>n<k> egress = switch port to the NIC

Every egress queue is an HTB root with one parent class at the link rate and one leaf per
traffic class of :mod:`mfsched.traffic_classes` (the one level -> class -> DSCP table). Leaves
have a tiny guaranteed rate and may borrow the whole link; HTB lends spare tokens to the leaf
with the smallest ``prio`` first, so the leaves are served in strict priority (the kernel here
has no ``prio``/``ets`` qdisc). Packets are classified by u32 filters on the DSCP bits of the
IPv4 TOS byte; on hosts the sockets also set ``SO_PRIORITY`` to the leaf's class id. Unmarked
traffic falls into the lowest class.

Two NICs in one subnet need source routing: each NIC has a routing table chosen by source
address (``ip rule from <addr>``), and ARP answers only on the NIC that owns the address. All
addresses come from 198.18.0.0/15 (RFC 2544 benchmarking); nothing leaves the namespaces.
Deleting a namespace deletes its interfaces, so teardown is deleting the namespaces.

Ownership: before it creates anything, :func:`fabric` records its owner (pid and the process's
start time, so that a recycled pid is not mistaken for it) in ``OWNER_DIR/<tag>.json``; the
record goes when the fabric is torn down. :func:`clean` removes only the namespaces whose
recorded owner is gone (a killed run); those of a live run, and namespaces with no record
(made by hand or by an older mfsched), stay unless ``force`` is given.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..traffic_classes import DEFAULT_CLASSES, NUM_CLASSES

__all__ = [
    "OWNER_DIR",
    "PREFIX",
    "Cleaned",
    "Fabric",
    "FabricSpec",
    "clean",
    "fabric",
    "have_netns",
    "list_namespaces",
    "set_link_rate",
]

PREFIX = "mfs-"
OWNER_DIR = Path("/run/mfsched/netns")  # <tag>.json: who built the fabric of that tag
_TAG_OF = re.compile(r"mfs-([0-9a-z]{1,6})-(?:h\d+|sw)$")
SUBNET = "198.18.0.0/16"
_LEAF_RATE_BPS = 64_000  # what a leaf is guaranteed; everything above is borrowed by prio
_HOST_HANDLE, _SWITCH_HANDLE = 1, 2


def so_priority_of_class(hw_class: int) -> int:
    """SO_PRIORITY value that HTB on a host uplink maps straight to the class's leaf."""
    return (_HOST_HANDLE << 16) | (0x10 + hw_class)


@dataclass(frozen=True)
class FabricSpec:
    """What to build. ``nic_rate_bps`` is the HTB rate of every NIC uplink and switch port
    (counted as HTB counts: IP packets plus the 14-byte Ethernet header)."""

    servers: int
    nics_per_server: int = 1
    nic_rate_bps: float = 200e6
    mtu: int = 9000
    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    queue_packets: int = 2000  # per leaf queue

    def __post_init__(self) -> None:
        if not 1 <= self.servers <= 200 or not 1 <= self.nics_per_server <= 8:
            raise ValueError("need 1..200 servers and 1..8 NICs per server")
        if not 1e5 <= self.nic_rate_bps <= 10e9:
            raise ValueError("nic_rate_bps must be within 100 kbit/s .. 10 Gbit/s")
        if not re.fullmatch(r"[0-9a-z]{1,6}", self.tag):
            raise ValueError("tag: 1-6 lower-case letters or digits")
        if not 1280 <= self.mtu <= 9000:
            raise ValueError("mtu must be within 1280..9000")

    @property
    def payload_bytes_per_packet(self) -> int:
        return self.mtu - 52  # IPv4 20 + TCP 20 + timestamps 12

    @property
    def payload_share(self) -> float:
        """TCP payload bytes per byte HTB counts (IP packet + Ethernet header)."""
        return self.payload_bytes_per_packet / (self.mtu + 14)


def payload_to_htb_rate(payload_bps: float, mtu: int) -> float:
    """The HTB rate that leaves ``payload_bps`` of TCP payload at full-size segments."""
    return payload_bps * (mtu + 14) / (mtu - 52)


@dataclass(frozen=True)
class Fabric:
    """A built fabric: names and addresses, for daemons and tests."""

    spec: FabricSpec

    @property
    def prefix(self) -> str:
        return f"{PREFIX}{self.spec.tag}-"

    def host_ns(self, server: int) -> str:
        return f"{self.prefix}h{server}"

    @property
    def switch_ns(self) -> str:
        return f"{self.prefix}sw"

    @property
    def namespaces(self) -> list[str]:
        return [self.host_ns(h) for h in range(self.spec.servers)] + [self.switch_ns]

    @staticmethod
    def nic_dev(nic: int) -> str:
        return f"n{nic}"

    @staticmethod
    def port_dev(server: int, nic: int) -> str:
        return f"p{server}n{nic}"

    @staticmethod
    def address(server: int, nic: int) -> str:
        return f"198.18.{server}.{10 + nic}"

    def addresses(self, server: int) -> list[str]:
        return [self.address(server, k) for k in range(self.spec.nics_per_server)]


# --- running ip / tc ---------------------------------------------------------------------------


def _run(argv: Sequence[str], stdin: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): "
                           f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def _batch(tool: str, ns: str | None, lines: list[str]) -> None:
    if not lines:
        return
    argv = [tool] + (["-n", ns] if ns else []) + ["-batch", "-"]
    _run(argv, "\n".join(lines) + "\n")


def _sysctl(ns: str, settings: dict[str, str]) -> None:
    args = [f"{k}={v}" for k, v in settings.items()]
    _run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", *args])


def have_netns() -> str | None:
    """None if namespaces, veth, bridges and HTB work here; otherwise the reason."""
    if os.geteuid() != 0:
        return "needs root"
    tag = "c" + secrets.token_hex(2)
    spec = FabricSpec(servers=1, tag=tag)
    try:
        with fabric(spec):
            return None
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        return f"cannot build a namespace fabric: {e}"


# --- building ----------------------------------------------------------------------------------


def _class_lines(verb: str, dev: str, handle: int, rate_bps: float, mtu: int) -> list[str]:
    """The parent class at the link rate and the leaves that borrow up to it (``verb``: add
    when building, change when the link rate changes)."""
    rate = int(rate_bps)
    burst = max(2 * (mtu + 14), int(rate_bps / 8 * 1e-3))  # about 1 ms at line rate
    lines = [f"class {verb} dev {dev} parent {handle}: classid {handle}:1 htb rate {rate}bit "
             f"ceil {rate}bit burst {burst} cburst {burst}"]
    lines += [f"class {verb} dev {dev} parent {handle}:1 classid {handle}:{0x10 + c:x} htb "
              f"rate {_LEAF_RATE_BPS}bit ceil {rate}bit burst {burst} cburst {burst} "
              f"prio {c} quantum {mtu + 14}" for c in range(NUM_CLASSES)]
    return lines


def _htb_lines(dev: str, handle: int, rate_bps: float, mtu: int, queue: int) -> list[str]:
    """HTB root, one parent at the link rate, NUM_CLASSES strict-priority leaves, DSCP filters."""
    lines = [f"qdisc add dev {dev} root handle {handle}: htb default {0x10 + NUM_CLASSES - 1:x} "
             f"r2q 1000"]
    lines += _class_lines("add", dev, handle, rate_bps, mtu)
    for c in range(NUM_CLASSES):
        leaf = f"{handle}:{0x10 + c:x}"
        lines.append(f"qdisc add dev {dev} parent {leaf} handle {0x100 + c:x}: pfifo "
                     f"limit {queue}")
        lines.append(f"filter add dev {dev} parent {handle}: protocol ip prio {c + 1} u32 "
                     f"match ip tos {DEFAULT_CLASSES.tos_of(c):#04x} 0xfc flowid {leaf}")
    return lines


def _host_sysctls(nics: int) -> dict[str, str]:
    s = {
        "net.ipv4.tcp_slow_start_after_idle": "0",
        "net.ipv4.conf.all.rp_filter": "0",
        "net.ipv4.conf.default.rp_filter": "0",
    }
    if nics > 1:
        s.update({"net.ipv4.conf.all.arp_ignore": "1", "net.ipv4.conf.all.arp_announce": "2"})
    return s


def _build(fab: Fabric) -> None:
    spec = fab.spec
    sw = fab.switch_ns
    for ns in fab.namespaces:
        _run(["ip", "netns", "add", ns])
    _batch("ip", sw, ["link set lo up", "link add br0 type bridge stp_state 0 forward_delay 0",
                      f"link set br0 mtu {spec.mtu} up"])
    with contextlib.suppress(RuntimeError):  # br_netfilter may be absent: nothing to switch off
        _sysctl(sw, {"net.bridge.bridge-nf-call-iptables": "0"})
    sw_ip, sw_tc = [], []
    for h in range(spec.servers):
        host = fab.host_ns(h)
        host_ip, host_tc = ["link set lo up"], []
        for k in range(spec.nics_per_server):
            nic, port, addr = fab.nic_dev(k), fab.port_dev(h, k), fab.address(h, k)
            _run(["ip", "-n", host, "link", "add", nic, "mtu", str(spec.mtu), "type", "veth",
                  "peer", "name", port, "netns", sw])
            sw_ip += [f"link set {port} mtu {spec.mtu} master br0",
                      f"link set {port} gso_max_size {spec.mtu} up"]
            host_ip += [f"addr add {addr}/16 dev {nic}",
                        f"link set {nic} gso_max_size {spec.mtu} up"]
            if spec.nics_per_server > 1:
                host_ip += [f"rule add from {addr} table {100 + k}",
                            f"route add {SUBNET} dev {nic} src {addr} table {100 + k}"]
            host_tc += _htb_lines(nic, _HOST_HANDLE, spec.nic_rate_bps, spec.mtu,
                                  spec.queue_packets)
            sw_tc += _htb_lines(port, _SWITCH_HANDLE, spec.nic_rate_bps, spec.mtu,
                                spec.queue_packets)
        _sysctl(host, _host_sysctls(spec.nics_per_server))
        _batch("ip", host, host_ip)
        _batch("tc", host, host_tc)
    _batch("ip", sw, sw_ip)
    _batch("tc", sw, sw_tc)


def set_link_rate(fab: Fabric, rate_bps: float) -> None:
    """Change the HTB rate of every NIC uplink and switch port of a built fabric in place
    (connections, daemons and queues stay)."""
    mtu = fab.spec.mtu
    sw_tc: list[str] = []
    for h in range(fab.spec.servers):
        host_tc: list[str] = []
        for k in range(fab.spec.nics_per_server):
            host_tc += _class_lines("change", fab.nic_dev(k), _HOST_HANDLE, rate_bps, mtu)
            sw_tc += _class_lines("change", fab.port_dev(h, k), _SWITCH_HANDLE, rate_bps, mtu)
        _batch("tc", fab.host_ns(h), host_tc)
    _batch("tc", fab.switch_ns, sw_tc)


@contextlib.contextmanager
def fabric(spec: FabricSpec) -> Iterator[Fabric]:
    """Build the fabric, yield it, delete every namespace it created (also on failure). The
    owner is recorded before anything is created and forgotten after teardown."""
    fab = Fabric(spec)
    _record_owner(spec.tag)
    try:
        _build(fab)
        yield fab
    finally:
        delete_namespaces(fab.namespaces)
        _owner_path(spec.tag).unlink(missing_ok=True)


# --- ownership ---------------------------------------------------------------------------------


def _owner_path(tag: str) -> Path:
    return OWNER_DIR / f"{tag}.json"


def _start_ticks(pid: int) -> int | None:
    """When the process started (clock ticks since boot, /proc/<pid>/stat field 22); None if
    there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[19])  # fields after "(comm)" start at 3


def _record_owner(tag: str, pid: int | None = None) -> None:
    pid = os.getpid() if pid is None else pid
    OWNER_DIR.mkdir(parents=True, exist_ok=True)
    _owner_path(tag).write_text(json.dumps({"pid": pid, "start_ticks": _start_ticks(pid)}))


def owner_of(namespace: str) -> tuple[int, bool] | None:
    """(owner pid, whether that process still runs) of a fabric's namespace; None if no
    owner is recorded."""
    m = _TAG_OF.match(namespace)
    if m is None:
        return None
    try:
        rec = json.loads(_owner_path(m.group(1)).read_text())
        pid, ticks = int(rec["pid"]), rec["start_ticks"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pid, ticks is not None and _start_ticks(pid) == ticks


# --- inspection and cleanup ----------------------------------------------------------------


def list_namespaces(prefix: str = PREFIX) -> list[str]:
    out = _run(["ip", "netns", "list"], check=False)
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [n for n in names if n.startswith(prefix)]


def delete_namespaces(names: Sequence[str]) -> list[str]:
    """Delete the namespaces that exist; returns those deleted."""
    existing = set(list_namespaces(""))
    gone = []
    for ns in names:
        if ns in existing:
            _run(["ip", "netns", "del", ns], check=False)
            gone.append(ns)
    return gone


def namespace_pids(ns: str) -> list[int]:
    """Processes running inside a namespace (``ip netns pids``)."""
    out = _run(["ip", "netns", "pids", ns], check=False)
    return [int(x) for x in out.split() if x.isdigit()]


@dataclass(frozen=True)
class Cleaned:
    """What :func:`clean` did: deleted namespace -> the pids it stopped inside it; kept
    namespace -> why."""

    deleted: dict[str, list[int]]
    kept: dict[str, str]


def clean(prefix: str = PREFIX, wait_s: float = 2.0, force: bool = False) -> Cleaned:
    """Remove the namespaces starting with ``prefix`` whose recorded owner is gone (leftovers
    of killed runs); with ``force`` also those of live runs and those without an owner.

    Processes still inside a removed namespace (daemons of a killed run) are sent SIGTERM,
    then SIGKILL, by pid; nothing outside these namespaces is touched.
    """
    if not prefix.startswith(PREFIX):
        raise ValueError(f"refusing to clean namespaces outside the {PREFIX!r} prefix")
    deleted: dict[str, list[int]] = {}
    kept: dict[str, str] = {}
    gone_tags: set[str] = set()
    for ns in list_namespaces(prefix):
        owner = owner_of(ns)
        if not force and owner is None:
            kept[ns] = "no owner recorded (built by hand or by an older mfsched)"
            continue
        if not force and owner[1]:
            kept[ns] = f"its run is still alive (pid {owner[0]})"
            continue
        pids = namespace_pids(ns)
        _stop_pids(pids, wait_s)
        delete_namespaces([ns])
        deleted[ns] = pids
        m = _TAG_OF.match(ns)
        if m is not None and (owner is None or not owner[1]):
            gone_tags.add(m.group(1))
    for tag in gone_tags:  # records of dead owners whose namespaces are all gone
        if not any(_TAG_OF.match(n) and _TAG_OF.match(n).group(1) == tag
                   for n in list_namespaces(f"{PREFIX}{tag}-")):
            _owner_path(tag).unlink(missing_ok=True)
    return Cleaned(deleted, kept)


def _stop_pids(pids: list[int], wait_s: float) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = []
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
                alive.append(pid)
        deadline = time.monotonic() + wait_s
        while alive and time.monotonic() < deadline:
            alive = [p for p in alive if _alive(p)]
            time.sleep(0.05)
        if not alive:
            return


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def class_stats(ns: str, dev: str) -> dict[str, int]:
    """Bytes sent per HTB class id on one device (for tests and the benchmark)."""
    out = _run(["tc", "-n", ns, "-s", "class", "show", "dev", dev])
    stats: dict[str, int] = {}
    current = None
    for line in out.splitlines():
        m = re.match(r"class htb (\S+)", line.strip())
        if m:
            current = m.group(1)
            continue
        m = re.match(r"Sent (\d+) bytes", line.strip())
        if m and current is not None:
            stats[current] = int(m.group(1))
            current = None
    return stats
