"""Unit helpers. Internally everything is seconds, bytes and bits per second.

Names of fields and variables carry their unit (``size_bytes``, ``capacity_bps``, ``deadline_s``).
These helpers only convert human-friendly numbers at the edges (specs, CLI, tests).
"""

from __future__ import annotations

__all__ = [
    "BITS_PER_BYTE",
    "bytes_per_s",
    "gb_per_s",
    "gbps",
    "gib",
    "kib",
    "mbps",
    "mib",
    "ms",
    "tflops",
    "us",
]

BITS_PER_BYTE = 8


def gbps(x: float) -> float:
    """Gigabits per second -> bits per second."""
    return x * 1e9


def mbps(x: float) -> float:
    """Megabits per second -> bits per second."""
    return x * 1e6


def gb_per_s(x: float) -> float:
    """Gigabytes (1e9 B) per second -> bits per second."""
    return x * 1e9 * BITS_PER_BYTE


def bytes_per_s(bps: float) -> float:
    """Bits per second -> bytes per second."""
    return bps / BITS_PER_BYTE


def tflops(x: float) -> float:
    """TFLOP/s -> FLOP/s."""
    return x * 1e12


def kib(x: float) -> float:
    return x * 1024.0


def mib(x: float) -> float:
    return x * 1024.0**2


def gib(x: float) -> float:
    return x * 1024.0**3


def ms(x: float) -> float:
    """Milliseconds -> seconds."""
    return x * 1e-3


def us(x: float) -> float:
    """Microseconds -> seconds."""
    return x * 1e-6
