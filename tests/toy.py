"""Scripted toy scenarios: flows, compute timers and policy notifications at fixed times,
run through the real engine and a real policy. Used to pin the paper's examples exactly."""

from __future__ import annotations

import numpy as np

from mfsched.policy.types import BatchInfo, FlowInfo, RequestInfo, Stage
from mfsched.sim.engine import Engine, EventKind

MS = 1e-3
MB = 1e6
GBPS_BYTES = 1e9  # 1 GB/s: one MB per ms, so the paper's abstract units read as ms and MB


class _Links:
    """The part of a prepared transfer the simulator's engine reads."""

    def __init__(self, links) -> None:
        self.links = np.asarray(links, dtype=np.int64)
        self.weights = np.ones(len(links))
        self.share = 1.0


class Toy:
    def __init__(self, policy, capacities_bytes_per_s=(GBPS_BYTES,)) -> None:
        self.engine = Engine(np.asarray(capacities_bytes_per_s, dtype=float), policy,
                             check_invariants=True)
        self.finish: dict[str, float] = {}
        self._fid = 0

    def at(self, t: float, fn) -> None:
        self.engine.schedule(t, EventKind.ARRIVAL, fn)

    def request(self, rid: int, deadline_s: float, arrival_s: float = 0.0) -> None:
        self.at(arrival_s, lambda: self.engine.request_arrived(
            RequestInfo(rid, arrival_s, deadline_s - arrival_s, 1)))

    def batch(self, bid: int, rids, t: float = 0.0, layers: int = 1, layer_compute_s=0.0,
              early_port_bytes=None, p2d_port_bytes=None, compute_done=False) -> None:
        info = BatchInfo(bid, 0, tuple(rids), layers, t, layer_compute_s,
                         p2d_port_bytes or {}, early_port_bytes or {},
                         {p: 8 * c for p, c in enumerate(self.engine.network.capacity)})

        def start():
            self.engine.batch_started(info)
            if compute_done:
                self.engine.batch_compute_done(bid)

        self.at(t, start)

    def layer(self, bid: int, layer: int, t: float) -> None:
        self.at(t, lambda: self.engine.layer_started(bid, layer))

    def flow(self, name: str, t: float, stage: Stage, bid: int, rids, size: float,
             links=(0,), layer=0, target=None, deadline_s=None, then=None) -> None:
        def submit():
            self._fid += 1
            fid = self._fid
            info = FlowInfo(fid, stage, bid, tuple(rids), layer,
                            layer if target is None else target, size, size, 1,
                            tuple((link, size) for link in links),
                            8 * float(min(self.engine.network.capacity[list(links)])),
                            deadline_s, self.engine.now_s)

            def done(_fid):
                self.finish[name] = self.engine.now_s
                if then is not None:
                    then(self.engine.now_s)

            self.engine.submit(info, _Links(links), done)

        self.at(t, submit)

    def run(self) -> dict[str, float]:
        self.engine.run(lambda kind, fn: fn(), lambda: False)
        return self.finish
