"""The emulated testbed: the simulator's ``testbed`` scenario on namespaces, daemons and TCP.

``run_testbed(config, schedulers)`` is what ``mfsched testbed`` calls. It builds the scenario
exactly as the simulator does (:func:`mfsched.experiments.runner.prepare`: cluster, request
stream, SLO function), then for each scheduler:

1. builds (once) the fabric of :mod:`.netns`: one namespace per server with one veth per NIC,
   a bridge in a switch namespace, strict-priority HTB on every NIC uplink and switch port,
   link rates = the simulator's NIC payload rate / s² (:mod:`.scale`);
2. starts the coordinator and one daemon per server (inside the server's namespace);
3. runs :class:`mfsched.sim.serving.Serving`, unchanged, on the wall-clock engine of
   :mod:`.engine`: arrivals and layer compute steps are timers, Stage 1/2/3 flows are real bytes
   between the daemons; the records and the summary are the simulator's;
4. stops the processes (shutdown, then SIGTERM, then SIGKILL, by pid).

Everything is torn down on normal exit, on failure, on Ctrl-C and on SIGTERM (namespaces are
deleted in a ``finally``; ``mfsched net clean`` removes leftovers of a killed run).

What is emulated and how (see ``docs/dataplane.md``): each server is one
namespace with one veth per NIC (2 per server); GPU g uses NIC (g mod 4) // 2 as in the
simulator. Intra-server members (PCIe in the simulator) stay inside the daemon, which shares its
GPUs' PCIe links among them as the simulator does (:mod:`.pcie`). Decode instances are the receiving
daemons: they verify and acknowledge KV bytes; the first token is the serving logic's P2D
completion plus the decode step, as in the simulator.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..experiments.config import SimConfig
from ..experiments.runner import Prepared, RunResult, prepare, run_scheduler
from ..policy import make_policy
from ..sim.serving import Serving
from ..sim.topology import TOPOLOGIES, TestbedConfig
from .auth import RunKey
from .engine import Placement, RunSpec, WallClockEngine
from .limits import ControlLimits, DataLimits, limit_options
from .netns import Fabric, FabricSpec, fabric, payload_to_htb_rate
from .scale import Scale
from .sender import SenderConfig

__all__ = ["EmulationConfig", "TestbedRun", "emulated_layout", "run_testbed"]

log = logging.getLogger("mfsched.testbed")

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class EmulationConfig:
    """How the scenario is emulated (the scenario itself is a :class:`SimConfig`)."""

    scale: float = 20.0
    mtu: int = 9000
    sender: SenderConfig = field(default_factory=SenderConfig)
    coordinator: bool = True
    data_port: int = 7411
    stall_timeout_s: float = 60.0
    log_dir: str | None = None  # keep daemon/coordinator logs here (default: a temp dir)
    nice: int = 0  # scheduling niceness of the runner, daemons and coordinator (-20..19)
    authenticate: bool = True  # data connections prove the run key and are sealed
    key_file: str | None = None  # the run key; default: a fresh random key per run
    data_limits: DataLimits = field(default_factory=DataLimits)
    control_limits: ControlLimits = field(default_factory=ControlLimits)

    def __post_init__(self) -> None:
        Scale(self.scale)
        if not -20 <= self.nice <= 19:
            raise ValueError(f"nice must be within -20..19, got {self.nice}")


@dataclass(frozen=True)
class Layout:
    """The emulated cluster in real units."""

    servers: int
    nics_per_server: int
    gpus_per_server: int
    nic_payload_bps: float  # real TCP payload rate of one NIC
    htb_rate_bps: float  # what HTB is configured with for that payload rate
    pcie_bytes_per_s: float  # real
    placement: Placement


@dataclass(frozen=True)
class TestbedRun:
    """One scheduler's run: the simulator-compatible result plus data-plane counters."""

    result: RunResult
    daemons: list[dict[str, float]]
    engine_reconnects: int
    errors: list[str]
    lateness: dict[str, float]
    load_avg: tuple[float, float]  # 1-minute load average at the start and at the end


def emulated_layout(cfg: SimConfig, prepared: Prepared, emu: EmulationConfig) -> Layout:
    if cfg.scenario != "testbed":
        raise UserError("the emulated testbed runs the 'testbed' scenario only (the fat-tree "
                        "has 256 servers)", where="--scenario")
    topo: TestbedConfig = TOPOLOGIES.get("testbed")() if cfg.servers is None else \
        TOPOLOGIES.get("testbed")(servers=cfg.servers)
    scale = Scale(emu.scale)
    bw = getattr(cfg, "bandwidth_scale", 1.0)  # the simulator's --bandwidth-scale, if set
    payload = scale.real_rate(topo.nic_bps * topo.nic_goodput * bw)
    pcie = scale.real_rate(topo.pcie_bps * topo.pcie_efficiency * bw / 8)
    deployment = prepared.cluster.deployment
    homes = tuple(units[0].gpus[0] // topo.gpus_per_server for units in deployment.instances)
    placement = Placement(topo.servers, topo.gpus_per_server, homes)
    layout = Layout(topo.servers, topo.nics_per_server, topo.gpus_per_server, payload,
                    payload_to_htb_rate(payload, emu.mtu), pcie, placement)
    if not 1e6 <= layout.htb_rate_bps <= 2e9:
        raise UserError(f"--scale {emu.scale:g} gives {layout.htb_rate_bps / 1e6:.0f} Mbit/s "
                        "per NIC; choose a scale that gives 1..2000 Mbit/s", where="--scale")
    return layout


# --- processes ---------------------------------------------------------------------------------


def _python() -> list[str]:
    return [sys.executable, "-m"]


def _child_setup(nice: int, tie_to_parent: bool) -> Callable[[], None]:
    """What a child does before exec: take the emulation's niceness (absolute, not relative to
    the runner's), and get SIGTERM when the spawning thread dies (survives exec), so that a
    killed runner never leaves daemons behind."""
    def setup() -> None:
        if nice:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
        if tie_to_parent:
            with contextlib.suppress(OSError, AttributeError):
                libc = ctypes.CDLL(None, use_errno=True)
                libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    return setup


def _spawn(argv: list[str], log_path: Path, nice: int = 0,
           key: RunKey | None = None) -> subprocess.Popen:
    """Start a child; with ``key``, the child reads it from a pipe (``--key-fd``), so that it
    appears neither on a command line nor in a file."""
    # the death signal follows the spawning *thread*: only tie children to the main thread
    main = threading.current_thread() is threading.main_thread()
    fds: tuple[int, ...] = ()
    if key is not None:
        fd, w = os.pipe()
        os.write(w, key.export_hex().encode())
        os.close(w)
        fds = (fd,)
        argv = [*argv, "--key-fd", str(fd)]
    try:
        with open(log_path, "ab") as out:
            return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, pass_fds=fds,
                                    preexec_fn=_child_setup(nice, main))
    finally:
        for fd in fds:
            os.close(fd)


def daemon_argv(fab: Fabric, layout: Layout, emu: EmulationConfig, server: int, socket: str,
                coordinator: str | None) -> list[str]:
    s = emu.sender
    argv = ["ip", "netns", "exec", fab.host_ns(server), *_python(), "mfsched.dataplane.daemon",
            "--server", str(server), "--socket", socket, "--port", str(emu.data_port),
            "--nics", str(layout.nics_per_server),
            "--gpus-per-server", str(layout.gpus_per_server),
            "--pcie-bytes-per-s", repr(layout.pcie_bytes_per_s),
            "--chunk-bytes", str(s.chunk_bytes), "--window-bytes", str(s.window_bytes),
            "--promote-copy-after-s", repr(s.promote_copy_after_s), "--log-level", "WARNING",
            *limit_options(emu.data_limits, emu.control_limits)]
    if coordinator:
        argv += ["--coordinator", coordinator]
    if not emu.authenticate:
        argv.append("--no-auth")  # otherwise _spawn adds --key-fd
    return argv


def wait_for_socket(path: str, proc: subprocess.Popen, log_path: Path,
                    timeout_s: float = 60.0) -> None:
    """Until the child listens (nine children importing numba and pydantic at once on a
    loaded two-core machine took more than 20 s)."""
    deadline = time.monotonic() + timeout_s
    while not os.path.exists(path):
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
            raise RuntimeError(f"{proc.args[:6]}... exited with {proc.returncode}:\n{tail}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} did not appear within {timeout_s:.0f} s")
        time.sleep(0.02)


def stop_process(proc: subprocess.Popen, timeout_s: float = 3.0) -> None:
    """SIGTERM, wait, then SIGKILL: only the process we started, by its pid."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout_s)


@dataclass
class Cluster:
    """Running processes of one run (started by :func:`processes`)."""

    sockets: list[str]
    coordinator_socket: str | None
    daemons: list[subprocess.Popen]
    coordinator: subprocess.Popen | None
    log_dir: Path
    argv: list[list[str]]
    nice: int = 0
    key: RunKey | None = None  # the run's data-plane key (repr hidden)
    coordinator_argv: list[str] = field(default_factory=list)

    def restart_daemon(self, server: int) -> None:
        """Kill a daemon (SIGKILL) and start it again (fault tests)."""
        self.stop_daemon(server)
        self.start_daemon(server)

    def stop_daemon(self, server: int) -> None:
        proc = self.daemons[server]
        proc.kill()
        proc.wait(5)
        with contextlib.suppress(FileNotFoundError):  # so that wait_for_socket waits for a new one
            os.unlink(self.sockets[server])

    def start_daemon(self, server: int) -> None:
        log_path = self.log_dir / f"daemon{server}.log"
        proc = _spawn(self.argv[server], log_path, self.nice, self.key)
        if server < len(self.daemons):
            self.daemons[server] = proc
        else:
            self.daemons.append(proc)
        wait_for_socket(self.sockets[server], proc, log_path)

    def stop_coordinator(self) -> None:
        if self.coordinator is not None:
            self.coordinator.kill()
            self.coordinator.wait(5)

    def start_coordinator(self) -> None:
        if self.coordinator_socket is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.coordinator_socket)
        log_path = self.log_dir / "coordinator.log"
        self.coordinator = _spawn([*_python(), "mfsched.dataplane.coordinator", "--socket",
                                   self.coordinator_socket, "--log-level", "WARNING",
                                   *self.coordinator_argv], log_path, self.nice)
        wait_for_socket(self.coordinator_socket, self.coordinator, log_path)


@contextlib.contextmanager
def processes(fab: Fabric, layout: Layout, emu: EmulationConfig,
              run_dir: Path) -> Iterator[Cluster]:
    """Start the coordinator and the daemons; stop them (by pid) on exit, whatever happens."""
    run_dir.mkdir(parents=True, exist_ok=True)
    coord_sock = str(run_dir / "coordinator.sock") if emu.coordinator else None
    sockets = [str(run_dir / f"daemon{h}.sock") for h in range(layout.servers)]
    argv = [daemon_argv(fab, layout, emu, h, sockets[h], coord_sock)
            for h in range(layout.servers)]
    key = None
    if emu.authenticate:
        key = RunKey.from_file(emu.key_file) if emu.key_file else RunKey.generate()
    cluster = Cluster(sockets, coord_sock, [], None, run_dir, argv, emu.nice, key,
                      limit_options(DataLimits(), emu.control_limits))
    try:
        cluster.start_coordinator()
        for h in range(layout.servers):
            cluster.daemons.append(_spawn(argv[h], run_dir / f"daemon{h}.log", emu.nice, key))
        for h, proc in enumerate(cluster.daemons):
            wait_for_socket(sockets[h], proc, run_dir / f"daemon{h}.log")
        yield cluster
    finally:
        for proc in cluster.daemons:
            stop_process(proc)
        if cluster.coordinator is not None:
            stop_process(cluster.coordinator)


@contextlib.contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into SystemExit so that every ``finally`` runs (main thread only)."""
    def handler(signum, frame):
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- running ----------------------------------------------------------------------------------


def warm_slos(p: Prepared) -> None:
    """Fill the isolated-TTFT memo behind the SLOs (and compile the simulator's kernels) with
    a simulated run, so that the wall-clock run rarely computes an SLO at an arrival."""
    run_scheduler(p, "fs")


def run_one(p: Prepared, scheduler: str, fab: Fabric, layout: Layout, emu: EmulationConfig,
            run_dir: Path, progress: Callable[[int, int], None] | None = None,
            on_cluster: Callable[[Cluster, WallClockEngine], None] | None = None,
            drain: bool = False) -> TestbedRun:
    """One scheduler on a built fabric: start processes, run Serving, collect, stop.
    ``drain`` waits for the flows still in flight after the last evaluated first token (so
    that byte counters can be checked exactly)."""
    cfg = p.config
    load_start = os.getloadavg()[0]
    options = tuple(sorted(cfg.options_for(scheduler).items()))
    spec = RunSpec(f"{scheduler}-{secrets.token_hex(4)}", scheduler, cfg.num_levels, options,
                   emu.coordinator)
    with processes(fab, layout, emu, run_dir / scheduler) as cluster:
        engine = WallClockEngine(cluster.sockets, layout.placement, Scale(emu.scale), spec,
                                 record_flows=True, stall_timeout_s=emu.stall_timeout_s)
        try:
            engine.connect()
            if on_cluster is not None:
                on_cluster(cluster, engine)
            policy = make_policy(scheduler, cfg.num_levels, dict(options))
            serving = Serving(p.cluster, policy, p.requests, p.slo_fn, warmup=p.warmup,
                              evaluated=p.evaluated, history=p.history, progress=progress,
                              engine=engine)
            records, stats = serving.run()
            if drain and not engine.drain():
                raise RuntimeError(f"{engine.in_flight} flows did not complete after the run")
            daemons = engine.daemon_stats()
        finally:
            engine.close()
    result = RunResult.of(p, scheduler, records, stats)
    return TestbedRun(result, daemons, engine.reconnects, engine.errors,
                      engine.lateness.as_dict(), (load_start, os.getloadavg()[0]))


def fabric_spec(layout: Layout, emu: EmulationConfig) -> FabricSpec:
    return FabricSpec(servers=layout.servers, nics_per_server=layout.nics_per_server,
                      nic_rate_bps=layout.htb_rate_bps, mtu=emu.mtu)


def run_testbed(cfg: SimConfig | Prepared, schedulers: Sequence[str],
                emu: EmulationConfig | None = None,
                progress: Callable[[str, int, int], None] | None = None,
                warm: bool = True) -> list[TestbedRun]:
    """Run each scheduler on the emulated testbed; the fabric is built once and torn down at
    the end (also on failure and Ctrl-C)."""
    if os.geteuid() != 0:
        raise UserError("the emulated testbed needs root (network namespaces and tc)")
    emu = emu or EmulationConfig()
    p = cfg if isinstance(cfg, Prepared) else prepare(cfg)
    layout = emulated_layout(p.config, p, emu)
    if warm:
        warm_slos(p)
    runs = []
    base = Path(emu.log_dir) if emu.log_dir else None
    nice_before = os.getpriority(os.PRIO_PROCESS, 0)
    if emu.nice:
        os.setpriority(os.PRIO_PROCESS, 0, emu.nice)  # the runner (the emulated runtimes)
    try:
        with terminate_on_sigterm(), fabric(fabric_spec(layout, emu)) as fab, \
                tempfile.TemporaryDirectory(prefix="mfs-run-") as tmp:
            run_dir = base or Path(tmp)
            for name in schedulers:
                cb = None if progress is None else (lambda d, t, n=name: progress(n, d, t))
                runs.append(run_one(p, name, fab, layout, emu, run_dir, cb))
    finally:
        if emu.nice:
            os.setpriority(os.PRIO_PROCESS, 0, nice_before)
    return runs
