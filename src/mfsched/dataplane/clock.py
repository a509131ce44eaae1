"""Event loops whose timers fire on time, for every process of the data plane.

asyncio's default selector on Linux is epoll, whose timeout is in whole milliseconds; asyncio
rounds it up, so every timer fires up to 1 ms late. In the emulation that is 50 us of model time
per compute step at s = 20 (measured: the mean lateness of the engine's timers fell from about
1 ms of wall time to a few tens of microseconds with select). ``select()`` takes microseconds;
the engine, a daemon and the coordinator have a few hundred sockets at most, well below its
1024-descriptor limit. Used by :mod:`.engine`, :mod:`.daemon` and :mod:`.coordinator`.
"""

from __future__ import annotations

import asyncio
import selectors

__all__ = ["precise_event_loop"]


def precise_event_loop() -> asyncio.AbstractEventLoop:
    return asyncio.SelectorEventLoop(selectors.SelectSelector())
