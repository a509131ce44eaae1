"""MFS priority levels -> the priority knobs of real transports (DSCP, SO_PRIORITY, UCX, NCCL).

Who calls this: the worker side of the vLLM connector (to label each permitted transfer with
its transport class), and deployment tooling that starts one NIXL agent / UCX context or one
NCCL communicator per class. Pure: only :mod:`socket` constants, no vLLM, NIXL or NCCL import.

Which class a level gets and which DSCP a class carries come from the one table of
:mod:`mfsched.traffic_classes`, which the data-plane daemon and the emulated fabric use as well
(class 0 is reserved for control traffic, level 0 = urgent P2D is class 1 = DSCP EF, the
scavenger the last class = DSCP LE). This module adds the knobs of each transport:

* **TCP** (Linux): ``IP_TOS`` = DSCP << 2 (switches and ``tc`` filters classify on DSCP), and
  ``SO_PRIORITY`` (the skb priority that the host's qdisc uses; values 0..6 need no
  CAP_NET_ADMIN, a higher value is more important for ``pfifo_fast``).
* **UCX / NIXL** (RoCE / InfiniBand): ``UCX_IB_TRAFFIC_CLASS`` (the RoCEv2 traffic class, i.e.
  the IP TOS byte: DSCP << 2) and ``UCX_IB_SL`` (IB service level / RoCE Ethernet priority,
  0..7). UCX reads them per context, so a NIXL agent is one class: either run one agent per
  class, or pass the values in the NIXL UCX backend's ``engine_config`` ("IB_TRAFFIC_CLASS=..,
  IB_SL=..", see :func:`nixl_engine_config`); environment variables win over ``engine_config``.
* **NCCL** (Stage-2 collectives): ``ncclConfig_t.trafficClass`` per communicator (one
  communicator per class), or process-wide ``NCCL_IB_TC`` / ``NCCL_IB_SL``. MFS puts Stage-2
  flows in the top early-stage level, so :func:`stage2_nccl_env` gives that class's values.

RoCE fabrics usually keep lossless RDMA at one DSCP (often 26 -> priority 3 with PFC on it);
there, pass a :class:`~mfsched.traffic_classes.ClassTable` whose classes carry the DSCP values
the switches trust, and keep PFC on the matching priorities.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from ...traffic_classes import DEFAULT_CLASSES, DEFAULT_DSCP, ClassTable

__all__ = [
    "DEFAULT_DSCP",
    "TransportClass",
    "apply_socket_class",
    "nccl_env",
    "nixl_engine_config",
    "stage2_nccl_env",
    "transport_class",
    "ucx_env",
]

_MAX_UNPRIVILEGED_SO_PRIORITY = 6
_MAX_IB_SL = 7


@dataclass(frozen=True, slots=True)
class TransportClass:
    """The knob values of one transport class (``index`` 0 is the most important)."""

    index: int
    dscp: int
    so_priority: int
    ib_sl: int

    @property
    def ip_tos(self) -> int:
        """The IP TOS byte: DSCP in the upper six bits, ECN bits left 0."""
        return self.dscp << 2

    @property
    def ib_traffic_class(self) -> int:
        """RoCEv2 traffic class = IP TOS byte (what UCX_IB_TRAFFIC_CLASS and NCCL_IB_TC take)."""
        return self.ip_tos


def transport_class(level: int, num_levels: int,
                    table: ClassTable = DEFAULT_CLASSES) -> TransportClass:
    """All knob values for MFS ``level`` (0..K, K = the scavenger) with the classes of
    ``table``: the class from :meth:`ClassTable.of_level`, its DSCP, an SO_PRIORITY and an IB
    service level that fall with the class (the scavenger's SO_PRIORITY is 0)."""
    index = table.of_level(level, num_levels)
    last = table.num_classes - 1
    so_priority = max(0, _MAX_UNPRIVILEGED_SO_PRIORITY - index) if index < last else 0
    ib_sl = max(0, _MAX_IB_SL - index)
    return TransportClass(index=index, dscp=table.dscp_of(index), so_priority=so_priority,
                          ib_sl=ib_sl)


def ucx_env(cls: TransportClass) -> dict[str, str]:
    """Environment for a UCX context (e.g. one NIXL agent process) of this class."""
    return {"UCX_IB_TRAFFIC_CLASS": str(cls.ib_traffic_class), "UCX_IB_SL": str(cls.ib_sl)}


def nixl_engine_config(cls: TransportClass, base: str = "") -> str:
    """The NIXL UCX backend's ``engine_config`` string ("KEY=VAL,...", UCX names without the
    ``UCX_`` prefix), appended to ``base`` (e.g. vLLM's own "RCACHE_ENABLE=n")."""
    ours = f"IB_TRAFFIC_CLASS={cls.ib_traffic_class},IB_SL={cls.ib_sl}"
    return f"{base},{ours}" if base else ours


def nccl_env(cls: TransportClass) -> dict[str, str]:
    """Process-wide NCCL settings for IB/RoCE; per communicator, set
    ``ncclConfig_t.trafficClass = cls.ib_traffic_class`` instead."""
    return {"NCCL_IB_TC": str(cls.ib_traffic_class), "NCCL_IB_SL": str(cls.ib_sl)}


def stage2_nccl_env(num_levels: int, table: ClassTable = DEFAULT_CLASSES) -> dict[str, str]:
    """NCCL settings for Stage-2 collectives, which MFS keeps in the top early-stage level 1."""
    return nccl_env(transport_class(1, num_levels, table))


def apply_socket_class(sock: socket.socket, cls: TransportClass) -> None:
    """Mark a TCP socket with the class's DSCP (IP_TOS / IPV6_TCLASS) and SO_PRIORITY."""
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, cls.ip_tos)
    else:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, cls.ip_tos)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY, cls.so_priority)
