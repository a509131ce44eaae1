"""Pure functions from run records to summaries. Called by the runner, the CLI, the sweep
points (per-item breakdowns), the sweep tables and the report (sustainable rate)."""

from .summarize import (
    Summary,
    SustainableRate,
    request_earliness,
    stage2_cct_per_layer,
    summarize,
    sustainable_rate,
)

__all__ = ["Summary", "SustainableRate", "request_earliness", "stage2_cct_per_layer",
           "summarize", "sustainable_rate"]
