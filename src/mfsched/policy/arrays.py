"""Array state for the policies that decide in one compiled pass over every flow (PIAS and
the oracle, :mod:`mfsched.policy.baselines` and :mod:`mfsched.policy.oracle`): columns that
grow by doubling, and the flows' progress read in bulk."""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from .types import ProgressView

__all__ = ["grown", "progress_arrays"]


def grown(arr: np.ndarray, index: int) -> np.ndarray:
    """``arr`` (its last axis: columns) with room for column ``index``: itself if it has
    room, else a copy twice as wide (at least ``index + 1``), the new columns zero."""
    if index < arr.shape[-1]:
        return arr
    wider = np.zeros((*arr.shape[:-1], max(2 * arr.shape[-1], index + 1)), dtype=arr.dtype)
    wider[..., :arr.shape[-1]] = arr
    return wider


def progress_arrays(progress: ProgressView, flows: Collection[int], *, rates: bool = True
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Every live flow's id, remaining bytes and rate (bytes/s; None unless ``rates``): the
    progress view's own arrays where it offers them (``flow_arrays``: the simulator's
    network, read-only views), else ``flows`` read through the view's getters (the rates
    only when asked: a getter call per flow)."""
    bulk = getattr(progress, "flow_arrays", None)
    if bulk is not None:
        ids, remaining, rate = bulk()
        return ids, remaining, rate if rates else None
    ids = np.fromiter(flows, dtype=np.int64, count=len(flows))
    remaining = np.array([progress.remaining_bytes(int(f)) for f in ids])
    return ids, remaining, (np.array([progress.rate_bytes_per_s(int(f)) for f in ids])
                            if rates else None)
