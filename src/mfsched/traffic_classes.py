"""Policy levels -> traffic classes -> DSCP: the one table every transport uses.

Who calls this: the data-plane daemon (the hardware class of a member from its priority,
:mod:`mfsched.dataplane.runstate`), the emulated fabric (HTB leaves and their DSCP filters,
:mod:`mfsched.dataplane.netns`; the marks of data and control sockets,
:mod:`mfsched.dataplane.wire`) and the worker side of the vLLM connector (the DSCP / UCX / NCCL
knobs of a permitted transfer, :mod:`mfsched.integrations.vllm.transport`). Pure: numbers only.

A policy has K strict levels plus the scavenger level K (:mod:`mfsched.policy.rmlq`); a port
offers a few strict-priority classes (RoCE switches and the emulated fabric's HTB: 8). Class 0
is served first and is reserved for control traffic (TCP acknowledgements, handshakes, the
transport's own acknowledgements), which must never wait behind data. Levels map to the data
classes 1..7 in order (:func:`class_of_level`):

=========================  =======  ======  ============================================
policy level (MFS, K = 8)  class    DSCP    meaning
=========================  =======  ======  ============================================
control                    0        CS6 48  acknowledgements, handshakes
0                          1        EF  46  urgent P2D
1 .. 4                     2 .. 5   CS5..2  early stages by RLI (Stage 2 in level 1)
5 .. K-1                   6        CS1  8  P2D MLU bands (they share the class)
K (scavenger)              7        LE   1  pruned requests (RFC 8622 lower effort)
=========================  =======  ======  ============================================

So levels 0, 1, ... keep classes of their own as long as classes last, and the levels beyond
share the last data class before the scavenger's; the hosts' software queues keep the full
(level, rank) order inside a class (the paper's hybrid queue, §5). Unmarked traffic (CS0)
falls into the lowest class of the emulated fabric.

A fabric with other DSCP values (RoCE deployments keep lossless RDMA at the values the switches
trust, often 26) passes its own table: :class:`ClassTable` takes the DSCP per class.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CONTROL_CLASS", "DEFAULT_CLASSES", "DEFAULT_DSCP", "NUM_CLASSES", "ClassTable",
           "class_of_level"]

NUM_CLASSES = 8  # strict-priority classes per port, class 0 served first
CONTROL_CLASS = 0  # reserved for acknowledgements and handshakes
# DSCP per class, most important first: CS6 (control), EF, CS5, CS4, CS3, CS2, CS1, LE.
DEFAULT_DSCP: tuple[int, ...] = (48, 46, 40, 32, 24, 16, 8, 1)


def class_of_level(level: int, num_levels: int, num_classes: int = NUM_CLASSES,
                   reserved: int = 1) -> int:
    """The class of policy ``level`` (0..K, K = ``num_levels`` = the scavenger) when the first
    ``reserved`` of ``num_classes`` classes are kept for control traffic.

    The scavenger (and anything below it) gets the last class; levels 0, 1, ... get classes
    ``reserved``, ``reserved + 1``, ... in order, and the levels that find no class of their own
    share the one before the scavenger's. With a single data class everything shares it.
    """
    data = num_classes - reserved
    if reserved < 0 or data < 1:
        raise ValueError(f"need at least one data class ({num_classes} classes, "
                         f"{reserved} reserved)")
    if level < 0:
        raise ValueError(f"level {level} is negative")
    if data == 1:
        return reserved
    if level >= num_levels:
        return num_classes - 1
    return reserved + min(level, data - 2)


@dataclass(frozen=True, slots=True)
class ClassTable:
    """The classes of one fabric: DSCP per class (most important first) and how many leading
    classes are reserved for control traffic."""

    dscp: tuple[int, ...] = DEFAULT_DSCP
    reserved: int = 1

    def __post_init__(self) -> None:
        if any(not 0 <= d <= 63 for d in self.dscp):
            raise ValueError("DSCP values are 0..63")
        if not 0 <= self.reserved < len(self.dscp):
            raise ValueError("need at least one class for data")

    @property
    def num_classes(self) -> int:
        return len(self.dscp)

    def of_level(self, level: int, num_levels: int) -> int:
        """The class of a policy level (see :func:`class_of_level`)."""
        return class_of_level(level, num_levels, len(self.dscp), self.reserved)

    def dscp_of(self, cls: int) -> int:
        if not 0 <= cls < len(self.dscp):
            raise ValueError(f"class {cls} out of range 0..{len(self.dscp) - 1}")
        return self.dscp[cls]

    def tos_of(self, cls: int) -> int:
        """The IPv4 TOS byte (``IP_TOS``) of a class: DSCP << 2, ECN bits 0."""
        return self.dscp_of(cls) << 2


DEFAULT_CLASSES = ClassTable()
