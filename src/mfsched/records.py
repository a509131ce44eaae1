"""The output schema shared by every engine: the simulator and the emulated testbed.

Engines append these rows; :mod:`mfsched.metrics` computes summaries from them; the CLI
writes them as Parquet with ``--out``. Keep field names stable: later checks and plots rely on
them. Rows are NamedTuples (immutable, typed, and cheap to build in the simulator's loop).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import pyarrow as pa

__all__ = [
    "FLOW_COLUMNS",
    "BatchRecord",
    "CollectiveRecord",
    "RequestRecord",
    "RunRecords",
    "to_table",
]


class RequestRecord(NamedTuple):
    request_id: int
    arrival_s: float
    input_tokens: int
    new_tokens: int
    local_hit_tokens: int
    remote_hit_tokens: int
    instance: int
    unit: int
    remote_unit: int
    slo_s: float
    deadline_s: float
    p2d_deadline_s: float  # the TTFT deadline minus the first decode step
    first_batch_s: float
    compute_done_s: float
    p2d_done_s: float
    first_token_s: float
    ttft_s: float
    met: bool
    pruned: bool
    evaluated: bool


class CollectiveRecord(NamedTuple):
    """One Stage-2 collective of one layer of one batch; CCT = end_s - start_s."""

    batch_id: int
    instance: int
    layer: int
    name: str
    start_s: float
    end_s: float


class BatchRecord(NamedTuple):
    batch_id: int
    instance: int
    requests: int
    new_tokens: int
    start_s: float
    compute_done_s: float
    layer_compute_s: float
    reuse_stall_s: float


FLOW_COLUMNS = ("flow_id", "stage", "batch_id", "layer", "members", "size_bytes",
                "total_bytes", "submit_s", "finish_s", "first_level", "last_level")


@dataclass
class RunRecords:
    requests: list[RequestRecord]
    collectives: list[CollectiveRecord]
    batches: list[BatchRecord]
    flows: list[tuple] | None  # rows in FLOW_COLUMNS order, when recorded


def to_table(rows: list, cls=None, columns: tuple[str, ...] | None = None) -> pa.Table:
    """Rows (dataclass instances or tuples with ``columns``) -> an Arrow table."""
    names = columns if columns is not None else cls._fields
    if not rows:
        return pa.table({n: pa.array([]) for n in names})
    if columns is None:
        cols = {n: [getattr(r, n) for r in rows] for n in names}
    else:
        cols = {n: [r[i] for r in rows] for i, n in enumerate(names)}
    return pa.table(cols)
