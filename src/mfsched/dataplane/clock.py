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
import signal
from typing import Protocol

__all__ = ["precise_event_loop", "serve_until_signalled"]


def precise_event_loop() -> asyncio.AbstractEventLoop:
    return asyncio.SelectorEventLoop(selectors.SelectSelector())


class _Server(Protocol):
    async def serve_forever(self) -> None: ...
    def request_stop(self) -> None: ...


def serve_until_signalled(server: _Server) -> None:
    """Run a daemon or the coordinator on a precise loop until SIGTERM or SIGINT."""

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, server.request_stop)
        await server.serve_forever()

    loop = precise_event_loop()
    try:
        loop.run_until_complete(run())
    finally:
        loop.close()
