"""MFS priority levels -> the priority knobs of real transports.

Who calls this: the worker side of the vLLM connector (to label each permitted transfer with
its transport class), deployment tooling that starts one NIXL agent / UCX context or one NCCL
communicator per class, and the data-plane daemon (same table, so the kernel queues and the
fabric agree). Pure: only :mod:`socket` constants, no vLLM, NIXL or NCCL import.

MFS uses K strict levels plus the scavenger level K (:mod:`mfsched.policy.rmlq`); a fabric
offers a handful of classes (RoCE: 8 priorities, of which usually one or two are lossless). So a
level first maps to a *class* (:func:`class_for_level`, 0 = most important), and a class to the
knobs of each transport:

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

The default class table (:data:`DEFAULT_DSCP`) uses DSCP EF (46), CS5..CS1, CS0 (best effort)
and LE (1, RFC 8622 lower effort) for the scavenger. RoCE fabrics usually keep lossless RDMA at
one DSCP (often 26 -> priority 3 with PFC on it); there, pass a table whose RDMA classes carry
the DSCP values the switches trust, and keep PFC on the matching priorities.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

__all__ = [
    "DEFAULT_DSCP",
    "TransportClass",
    "apply_socket_class",
    "class_for_level",
    "nccl_env",
    "nixl_engine_config",
    "stage2_nccl_env",
    "transport_class",
    "ucx_env",
]

# DSCP per class, most important first: EF, CS5, CS4, CS3, CS2, CS1, CS0 (default), LE.
DEFAULT_DSCP: tuple[int, ...] = (46, 40, 32, 24, 16, 8, 0, 1)

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


def class_for_level(level: int, num_levels: int, num_classes: int) -> int:
    """The transport class of MFS ``level`` among ``num_levels`` levels + the scavenger.

    The scavenger level ``num_levels`` always gets the last class (with the default table, DSCP
    LE). With enough classes every other level gets its own; otherwise level 0 (urgent P2D)
    keeps class 0 and levels 1..K-1 share the classes in between in equal spans, in order.
    With two classes, everything but the scavenger shares class 0.
    """
    if num_classes < 1:
        raise ValueError("need at least one class")
    if not 0 <= level <= num_levels:
        raise ValueError(f"level {level} outside 0..{num_levels}")
    if num_classes == 1:
        return 0
    if level == num_levels:
        return num_classes - 1
    if num_levels + 1 <= num_classes:
        return level
    if num_classes == 2 or level == 0:
        return 0
    middle = num_classes - 2  # classes 1 .. num_classes-2 for levels 1 .. num_levels-1
    return 1 + (level - 1) * middle // (num_levels - 1)


def transport_class(level: int, num_levels: int,
                    dscp_table: tuple[int, ...] = DEFAULT_DSCP) -> TransportClass:
    """All knob values for MFS ``level`` with one class per entry of ``dscp_table``."""
    if any(not 0 <= d <= 63 for d in dscp_table):
        raise ValueError("DSCP values are 0..63")
    index = class_for_level(level, num_levels, len(dscp_table))
    last = len(dscp_table) - 1
    so_priority = max(0, _MAX_UNPRIVILEGED_SO_PRIORITY - index) if index < last else 0
    ib_sl = max(0, _MAX_IB_SL - index)
    return TransportClass(index=index, dscp=dscp_table[index], so_priority=so_priority,
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


def stage2_nccl_env(num_levels: int, dscp_table: tuple[int, ...] = DEFAULT_DSCP) -> dict[str, str]:
    """NCCL settings for Stage-2 collectives, which MFS keeps in the top early-stage level 1."""
    return nccl_env(transport_class(1, num_levels, dscp_table))


def apply_socket_class(sock: socket.socket, cls: TransportClass) -> None:
    """Mark a TCP socket with the class's DSCP (IP_TOS / IPV6_TCLASS) and SO_PRIORITY."""
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, cls.ip_tos)
    else:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, cls.ip_tos)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY, cls.so_priority)
