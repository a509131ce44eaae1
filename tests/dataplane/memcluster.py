"""Run in-memory daemons (and a coordinator) in a child process until stdin closes.

Used by the wall-clock engine test so that the daemons and the engine do not share one
interpreter lock: ``python memcluster.py DIR SERVERS NICS``. Prints "ready" when listening.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from mfsched.dataplane.coordinator import Coordinator
from mfsched.dataplane.daemon import Daemon, DaemonConfig
from mfsched.dataplane.memtransport import MemoryFabric, MemoryTransport


async def main(tmp: Path, servers: int, nics: int) -> None:
    fabric = MemoryFabric()
    coord = Coordinator(str(tmp / "coord.sock"))
    await coord.start()
    daemons = [Daemon(DaemonConfig(h, str(tmp / f"d{h}.sock"), nics=nics, address_base="m",
                                   pcie_bytes_per_s=1e9, coordinator_path=str(tmp / "coord.sock")),
                      lambda addrs, ev: MemoryTransport(fabric, addrs, ev))
               for h in range(servers)]
    for d in daemons:
        await d.start()
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    for d in daemons:
        await d.stop()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
