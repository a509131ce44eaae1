"""Pure functions from run records to summaries. Called by the runner, the CLI, the sweep
points (per-item breakdowns) and the report (sustainable rate)."""

from .summarize import (
    Summary,
    request_earliness,
    stage2_cct_per_layer,
    summarize,
    sustainable_rate,
)

__all__ = ["Summary", "request_earliness", "stage2_cct_per_layer", "summarize",
           "sustainable_rate"]
