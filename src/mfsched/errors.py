"""User-facing errors.

Anything a user can cause (a malformed trace line, an unknown model, a negative rate) raises
:class:`UserError`. The CLI turns it into one line on stderr and exit code 2; it never shows a
traceback for these. A simulation that exceeds the bounds derived from its inputs raises
:class:`SimulationStuck` (one line, exit code 3): inputs that pass the checks should never get
there, so it is reported as what it is, a bug to fix. Programming errors stay ordinary
exceptions.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SimulationStuck", "UserError"]


@dataclass
class UserError(Exception):
    """A mistake in the user's input. ``where`` is a file (and line) or an option name."""

    reason: str
    where: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        if self.where is None:
            return self.reason
        if self.line is None:
            return f"{self.where}: {self.reason}"
        return f"{self.where}:{self.line}: {self.reason}"


class SimulationStuck(Exception):
    """A simulated run went past its bound on events or simulated time (see
    :mod:`mfsched.sim.engine`); the message names the stuck flow and request."""
