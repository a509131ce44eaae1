"""The request record that traces and generators produce and the serving model consumes."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np

__all__ = ["Request", "ideal_reuse_ratio", "poisson_retime", "prefix_hit_tokens"]


@dataclass(frozen=True, slots=True)
class Request:
    """One prefill request.

    ``block_hashes`` are prefix-chained block ids of ``block_tokens`` tokens each (the last
    block may be partial): two requests share KV for their first k blocks iff their first k
    ids are equal. An empty tuple means the trace carries no reuse information.
    """

    request_id: int
    arrival_s: float
    input_tokens: int
    output_tokens: int
    block_hashes: tuple[int, ...] = ()
    block_tokens: int = 16

    def __post_init__(self) -> None:
        if self.input_tokens <= 0:
            raise ValueError("input_tokens must be positive")
        if self.block_hashes and len(self.block_hashes) != math.ceil(
            self.input_tokens / self.block_tokens
        ):
            raise ValueError(
                f"{len(self.block_hashes)} block hashes do not cover {self.input_tokens} tokens "
                f"in blocks of {self.block_tokens}"
            )


def prefix_hit_tokens(request: Request, hit_blocks: int) -> int:
    """Tokens covered by the first ``hit_blocks`` blocks (the last block may be partial)."""
    return min(hit_blocks * request.block_tokens, request.input_tokens)


def ideal_reuse_ratio(requests: Iterable[Request], seen: set[int] | None = None) -> float:
    """Fraction of prompt tokens whose KV an infinite, shared prefix cache would hold
    (already holding the blocks in ``seen``, e.g. those of a stream's history).

    This is how "prompt reuse" is quoted for the paper's workloads (about 50% for QwenA-Conv,
    65% for QwenB-Agent).
    """
    seen = set() if seen is None else set(seen)
    hit = total = 0
    for r in requests:
        blocks = 0
        for h in r.block_hashes:
            if h not in seen:
                break
            blocks += 1
        hit += prefix_hit_tokens(r, blocks)
        total += r.input_tokens
        seen.update(r.block_hashes)
    return hit / total if total else 0.0


def poisson_retime(
    requests: Sequence[Request], rate_per_s: float, rng: np.random.Generator
) -> list[Request]:
    """Keep the order, replace arrival times by a Poisson process of ``rate_per_s``.

    Arrivals are cumulative exponential gaps, so the first request arrives after one gap.
    """
    if rate_per_s <= 0:
        raise ValueError("rate must be positive")
    times = np.cumsum(rng.exponential(1.0 / rate_per_s, size=len(requests)))
    return [replace(r, arrival_s=float(t)) for r, t in zip(requests, times, strict=True)]
