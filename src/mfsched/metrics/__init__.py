"""Pure functions from run records to summaries. Called by the runner and the CLI."""

from .summarize import Summary, summarize

__all__ = ["Summary", "summarize"]
