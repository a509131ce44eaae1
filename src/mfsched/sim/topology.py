"""Cluster topologies: GPUs, servers, directed links with capacities, and static paths.

Every resource is a *directed* link with a capacity in bits/s (the two directions of a cable
are independent). A path is the tuple of link ids a byte crosses from one GPU to another.

* ``testbed`` — the paper's testbed: servers of 4 GPUs on PCIe, two NICs per server (GPU i
  uses NIC i // 2), one non-blocking switch. Intra-server: source GPU's PCIe out, destination
  GPU's PCIe in. Inter-server: PCIe out, NIC up, NIC down, PCIe in.
* ``fattree`` — servers of 8 GPUs on NVSwitch, one NIC per GPU (rail-optimised), a
  non-blocking (1:1) fat-tree. With perfect load balancing the fabric never limits, so
  inter-server paths are NIC up -> NIC down (documented idealisation).

NIC capacities are multiplied by ``nic_goodput`` (default 1448/1502, the TCP/IPv4 payload
share of a 1500-byte MTU frame that ns-3 shows in ``../shared/tools/ns3ref``), PCIe by
``pcie_efficiency``: the simulator models payload bytes, so capacities are payload rates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from ..errors import UserError
from ..registry import Registry
from ..units import gb_per_s, gbps

__all__ = ["TOPOLOGIES", "FatTreeConfig", "TestbedConfig", "Topology", "build_topology",
           "scale_bandwidth"]

TCP_GOODPUT = 1448 / 1502


@dataclass(frozen=True, slots=True)
class TestbedConfig:
    servers: int = 8
    gpus_per_server: int = 4
    nics_per_server: int = 2
    nic_bps: float = gbps(100)
    pcie_bps: float = gb_per_s(15.75)
    pcie_efficiency: float = 0.8
    nic_goodput: float = TCP_GOODPUT
    gpu: str = "rtx3090"


@dataclass(frozen=True, slots=True)
class FatTreeConfig:
    servers: int = 256
    gpus_per_server: int = 8
    nic_bps: float = gbps(200)
    nvswitch_bps: float = gb_per_s(900)
    nic_goodput: float = TCP_GOODPUT
    gpu: str = "a100"


@dataclass
class Topology:
    """Links and static paths of a cluster. Paths are memoised."""

    name: str
    num_servers: int
    gpus_per_server: int
    link_names: list[str]
    capacity_bps: np.ndarray
    intra_server_bps: float  # per-GPU intra-server bandwidth, for TP all-reduce time
    gpu: str
    # rings NCCL's topology search finds (workload.comm): 1 where one ring already reaches a
    # GPU's PCIe Gen3 bandwidth, one per NIC on rail-optimised servers
    nccl_rings: int = 1
    _route: object = field(repr=False, default=None)
    _paths: dict[tuple[int, int], tuple[int, ...]] = field(default_factory=dict, repr=False)

    @property
    def num_gpus(self) -> int:
        return self.num_servers * self.gpus_per_server

    @cached_property
    def capacity_bytes_per_s(self) -> np.ndarray:
        return self.capacity_bps / 8.0

    def server_of(self, gpu: int) -> int:
        return gpu // self.gpus_per_server

    def path(self, src: int, dst: int) -> tuple[int, ...]:
        key = (src, dst)
        p = self._paths.get(key)
        if p is None:
            if src == dst:
                raise ValueError("no path from a GPU to itself")
            p = self._paths[key] = self._route(src, dst)
        return p


TOPOLOGIES: Registry[type] = Registry("topology")
TOPOLOGIES.add("testbed", TestbedConfig, "the paper's 8 x 4 RTX 3090 servers, 2 x 100G NICs each, "
               "one switch, PCIe inside a server")
TOPOLOGIES.add("fattree", FatTreeConfig, "N x 8-GPU servers on NVSwitch, one 200G NIC per GPU, "
               "non-blocking fat-tree (paper: 256 servers)")


def _positive(**values: float) -> None:
    for name, v in values.items():
        if not v > 0:
            raise UserError(f"topology {name} must be positive, got {v}")


def _build_testbed(c: TestbedConfig) -> Topology:
    _positive(servers=c.servers, gpus_per_server=c.gpus_per_server,
              nics_per_server=c.nics_per_server, nic_bps=c.nic_bps, pcie_bps=c.pcie_bps)
    n_gpu = c.servers * c.gpus_per_server
    gpus_per_nic = -(-c.gpus_per_server // c.nics_per_server)
    names: list[str] = []
    caps: list[float] = []
    pcie = c.pcie_bps * c.pcie_efficiency
    for g in range(n_gpu):
        names += [f"gpu{g}.pcie.out", f"gpu{g}.pcie.in"]
        caps += [pcie, pcie]
    nic_base = len(names)
    for s in range(c.servers):
        for k in range(c.nics_per_server):
            names += [f"s{s}.nic{k}.up", f"s{s}.nic{k}.down"]
            caps += [c.nic_bps * c.nic_goodput] * 2

    def nic(g: int) -> int:
        s, local = divmod(g, c.gpus_per_server)
        return nic_base + 2 * (s * c.nics_per_server + local // gpus_per_nic)

    def route(src: int, dst: int) -> tuple[int, ...]:
        if src // c.gpus_per_server == dst // c.gpus_per_server:
            return (2 * src, 2 * dst + 1)
        return (2 * src, nic(src), nic(dst) + 1, 2 * dst + 1)

    return Topology("testbed", c.servers, c.gpus_per_server, names, np.array(caps), pcie, c.gpu,
                    1, route)


def _build_fattree(c: FatTreeConfig) -> Topology:
    _positive(servers=c.servers, gpus_per_server=c.gpus_per_server, nic_bps=c.nic_bps,
              nvswitch_bps=c.nvswitch_bps)
    n_gpu = c.servers * c.gpus_per_server
    names: list[str] = []
    caps: list[float] = []
    for g in range(n_gpu):
        names += [f"gpu{g}.nvl.out", f"gpu{g}.nvl.in", f"gpu{g}.nic.up", f"gpu{g}.nic.down"]
        nic = c.nic_bps * c.nic_goodput
        caps += [c.nvswitch_bps, c.nvswitch_bps, nic, nic]

    def route(src: int, dst: int) -> tuple[int, ...]:
        if src // c.gpus_per_server == dst // c.gpus_per_server:
            return (4 * src, 4 * dst + 1)
        return (4 * src + 2, 4 * dst + 3)

    return Topology("fattree", c.servers, c.gpus_per_server, names, np.array(caps),
                    c.nvswitch_bps, c.gpu, c.gpus_per_server, route)


def scale_bandwidth(topology: Topology, factor: float) -> Topology:
    """The same topology with every link capacity multiplied by ``factor``."""
    return Topology(topology.name, topology.num_servers, topology.gpus_per_server,
                    topology.link_names, topology.capacity_bps * factor,
                    topology.intra_server_bps * factor, topology.gpu, topology.nccl_rings,
                    topology._route)


def build_topology(config: TestbedConfig | FatTreeConfig) -> Topology:
    if isinstance(config, TestbedConfig):
        return _build_testbed(config)
    return _build_fattree(config)
