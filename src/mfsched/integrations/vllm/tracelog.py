"""The decision log: one JSON line per MFS decision, from every process of a vLLM engine.

Who calls this: the connector's two halves (scheduler: one line per step plan; worker: one line
per permit batch and per layer boundary). vLLM runs them in different processes, so each line
carries the role and pid, and lines are appended with one ``write`` on an ``O_APPEND``
descriptor (whole lines from several processes do not interleave on a local file system).
The last records also stay in memory (``recent``) for tests and debugging.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from typing import Any

__all__ = ["DecisionLog"]


class DecisionLog:
    """Appends events to ``path`` (None: memory only) and keeps the last ``keep`` in memory."""

    def __init__(self, path: str | None, role: str, keep: int = 1000) -> None:
        self.path = path
        self.role = role
        self.recent: deque[dict[str, Any]] = deque(maxlen=keep)
        self._fd: int | None = None
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, event: str, **fields: Any) -> None:
        record = {"t_s": time.time(), "role": self.role, "pid": os.getpid(), "event": event,
                  **fields}
        self.recent.append(record)
        if self._fd is not None:
            os.write(self._fd, (json.dumps(record, default=str) + "\n").encode())

    def events(self, event: str) -> list[dict[str, Any]]:
        return [r for r in self.recent if r["event"] == event]

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
