"""A layer's paged KV cache seen per token: gather a request's token slots, scatter them back.

Who calls this: the worker side of ``MFSKVConnector`` (:mod:`.kv_worker`), on the prefill side
to copy a request's tokens of one layer out of the paged cache (``save_kv_layer``), on the
decode side to write them into the blocks vLLM allocated (the asynchronous load).

vLLM's attention backends have laid the cache out differently: FlashAttention ``(2, blocks,
block_size, kv_heads, head_size)``, MLA ``(blocks, block_size, latent)``; since vLLM 0.32 every
per-layer view a connector gets is the logical ``[B, H, N, C]`` of ``vllm.v1.kv_cache_layout``
(blocks, KV heads, tokens of a block, content: the CPU backend's ``2 x head_size``), whatever
the physical stride order. :class:`TokenView` finds the block and the in-block dimensions (that
logical order when vLLM has it, else the backend's own ``get_kv_cache_shape`` with probe sizes,
else the sizes of the tensor) and moves them to the front of a view (no copy), so that
``view[block_ids, offsets]`` is one token's K and V of every head: the bytes of a token are
exactly the KV bytes per token of that layer, whatever the layout. A layout whose dimensions
cannot be told apart is refused with the shape in the message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["TokenView", "dims_from_backend", "logical_dims", "slot_indices"]

_PROBE_BLOCKS, _PROBE_BLOCK_SIZE = 1009, 1013  # primes no real head count or size equals


def logical_dims() -> tuple[int, int] | None:
    """(block dim, in-block dim) of the logical per-layer view ``[B, H, N, C]`` of vLLM 0.32
    and later (``vllm.v1.kv_cache_layout``); None with an older vLLM."""
    try:
        from vllm.v1.kv_cache_layout import KVCacheLayout  # noqa: F401
    except ImportError:
        return None
    return 0, 2


def dims_from_backend(backend: Any, num_kv_heads: int, head_size: int) -> tuple[int, int] | None:
    """(block dim, in-block dim) of a backend's cache shape, or None if it cannot say."""
    try:
        shape = tuple(backend.get_kv_cache_shape(_PROBE_BLOCKS, _PROBE_BLOCK_SIZE,
                                                 num_kv_heads, head_size))
    except Exception:  # any backend API difference: fall back to the sizes
        return None
    if shape.count(_PROBE_BLOCKS) != 1 or shape.count(_PROBE_BLOCK_SIZE) != 1:
        return None
    return shape.index(_PROBE_BLOCKS), shape.index(_PROBE_BLOCK_SIZE)


def _dims_from_sizes(shape: Sequence[int], num_blocks: int, block_size: int) -> tuple[int, int]:
    blocks = [d for d, n in enumerate(shape) if n == num_blocks]
    slots = [d for d, n in enumerate(shape) if n == block_size and d not in blocks[:1]]
    if len(blocks) != 1 or len(slots) != 1:
        raise ValueError(f"cannot tell the block and in-block dimensions of a KV cache of shape "
                         f"{tuple(shape)} ({num_blocks} blocks of {block_size} tokens); "
                         "the attention backend's get_kv_cache_shape is needed")
    return blocks[0], slots[0]


def slot_indices(block_ids: Sequence[int], block_size: int, start: int,
                 end: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(block, offset) index tensors of tokens ``start..end-1`` of a request."""
    tokens = torch.arange(start, end, dtype=torch.long)
    table = torch.as_tensor(list(block_ids), dtype=torch.long)
    return table[tokens // block_size], tokens % block_size


class TokenView:
    """One layer's cache with dimensions (block, in-block slot, rest...)."""

    def __init__(self, cache: torch.Tensor, num_blocks: int, block_size: int,
                 dims: tuple[int, int] | None = None) -> None:
        block_dim, slot_dim = dims or _dims_from_sizes(cache.shape, num_blocks, block_size)
        if cache.shape[slot_dim] != block_size:
            raise ValueError(f"KV cache of shape {tuple(cache.shape)}: dimension {slot_dim} is "
                             f"not the block size {block_size}")
        self.cache = cache
        self.block_size = block_size
        self.view = cache.movedim((block_dim, slot_dim), (0, 1))
        self.token_shape = tuple(self.view.shape[2:])
        self.dtype = cache.dtype
        self.bytes_per_token = cache.element_size() * int(torch.Size(self.token_shape).numel())

    def gather(self, block_ids: Sequence[int], start: int, end: int) -> torch.Tensor:
        """Tokens ``start..end-1`` of a request, contiguous: (tokens, rest...)."""
        blocks, offsets = slot_indices(block_ids, self.block_size, start, end)
        return self.view[blocks, offsets].contiguous()

    def scatter(self, block_ids: Sequence[int], start: int, end: int,
                rows: torch.Tensor) -> None:
        """Write ``rows`` (tokens, rest...) as tokens ``start..end-1`` of a request."""
        blocks, offsets = slot_indices(block_ids, self.block_size, start, end)
        self.view[blocks, offsets] = rows

    def rows_of(self, raw: memoryview | bytearray, tokens: int) -> torch.Tensor:
        """``tokens`` rows of this layer's token shape over raw bytes (no copy)."""
        flat = torch.frombuffer(raw, dtype=torch.uint8, count=tokens * self.bytes_per_token)
        return flat.view(self.dtype).view(tokens, *self.token_shape)
