"""Check mfsched's fluid network model against packet-level ns-3 (../shared/tools/ns3ref).

For every scenario in ``ns3ref/scenarios`` this script computes flow completion times with
mfsched's own network model (:func:`mfsched.sim.replay.replay`, strict priority + max-min),
once with raw link capacities and once with the TCP payload share 1448/1502 that mfsched's
topologies apply to NIC links, and compares both with ns-3 (TCP NewReno, 8-band strict
priority, per-flow fair queues; ``--qdisc fq`` and ``flowprio``). ns-3 runs through the
ns3ref tool's own venv (``setup_venv.sh``); without it only our numbers are printed.

    python bench/ns3_check.py [--ns3ref DIR] [--write docs/results.md]

``--write`` replaces the section between the ns3-check markers in that file.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
from collections import deque
from pathlib import Path

from _report import save

from mfsched.sim.replay import ReplayFlow, replay
from mfsched.sim.topology import TCP_GOODPUT

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_NS3REF = ROOT.parent / "shared" / "tools" / "ns3ref"


def _topology(scn: dict):
    """Directed links (capacity B/s, delay s) and minimum-hop paths as ns3ref defines them."""
    link_id: dict[tuple[str, str], int] = {}
    caps: list[float] = []
    delays: list[float] = []
    adj: dict[str, list[str]] = {n: [] for n in scn["nodes"]}
    for group in scn["links"]:
        for a, b in group["pairs"]:
            for u, v in ((a, b), (b, a)):
                link_id[(u, v)] = len(caps)
                caps.append(group["capacity_bps"] / 8.0)
                delays.append(group["delay_s"])
            adj[a].append(b)
            adj[b].append(a)

    def path(src: str, dst: str) -> tuple[int, ...]:
        dist = {dst: 0}
        queue = deque([dst])
        while queue:
            u = queue.popleft()
            for v in adj[u]:
                if v not in dist:
                    dist[v] = dist[u] + 1
                    queue.append(v)
        hops, node = [], src
        while node != dst:
            nxt = next(v for v in adj[node] if dist.get(v) == dist[node] - 1)
            hops.append(link_id[(node, nxt)])
            node = nxt
        return tuple(hops)

    return caps, delays, path


def fluid_fcts_ours(scenario_path: Path, goodput: float = 1.0) -> dict[str, float]:
    scn = json.loads(Path(scenario_path).read_text())
    caps, delays, path = _topology(scn)
    flows, prop = [], {}
    for f in scn["flows"]:
        links = path(f["src"], f["dst"])
        prop[f["id"]] = sum(delays[k] for k in links)
        flows.append(ReplayFlow(f["id"], links, float(f["size_bytes"]), float(f["start_s"]),
                                int(f["priority"]),
                                tuple((float(t), int(p)) for t, p in
                                      f.get("priority_changes", []))))
    finish = replay([c * goodput for c in caps], flows)
    starts = {f.flow_id: f.start_s for f in flows}
    return {k: finish[k] - starts[k] + prop[k] for k in finish}


def ns3_fcts(ns3ref: Path, scenario: Path, qdisc: str) -> dict[str, float] | None:
    venv = Path(os.environ.get("NS3REF_VENV", Path.home() / ".cache" / "ns3ref-venv"))
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    res = subprocess.run([str(python), str(ns3ref / "ns3_fct.py"), str(scenario),
                          "--qdisc", qdisc], capture_output=True, text=True, check=True,
                         cwd="/tmp")
    return json.loads(res.stdout)


def _err(ours: dict, ref: dict, keys) -> tuple[float, float]:
    errs = [abs(ours[k] - ref[k]) / ref[k] for k in keys if ref.get(k)]
    return statistics.median(errs), max(errs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ns3ref", type=Path, default=DEFAULT_NS3REF)
    ap.add_argument("--write", type=Path, help="update the ns3-check section of this file")
    args = ap.parse_args()
    scenarios = sorted((args.ns3ref / "scenarios").glob("*.json"))
    lines = ["| scenario | ns-3 qdisc | flows | raw capacity: median / max \\|err\\| | "
             "payload capacity (x 1448/1502): median / max \\|err\\| | large flows (>= 1 MB), "
             "payload capacity: median / max |",
             "|---|---|---:|---|---|---|"]
    summary = {}
    for scn_path in scenarios:
        scn = json.loads(scn_path.read_text())
        raw = fluid_fcts_ours(scn_path)
        hc = fluid_fcts_ours(scn_path, TCP_GOODPUT)
        large = [f["id"] for f in scn["flows"] if f["size_bytes"] >= 1e6]
        for qdisc in ("fq", "flowprio"):
            ref = ns3_fcts(args.ns3ref, scn_path, qdisc)
            if ref is None:
                print(f"{scn_path.stem}: ours {json.dumps(raw)} (no ns-3 venv)")
                continue
            keys = list(raw)
            r_med, r_max = _err(raw, ref, keys)
            h_med, h_max = _err(hc, ref, keys)
            l_med, l_max = _err(hc, ref, large) if large else (float("nan"),) * 2
            summary[f"{scn_path.stem}/{qdisc}"] = {"raw": [r_med, r_max], "payload": [h_med, h_max],
                                                   "large_payload": [l_med, l_max]}
            lines.append(f"| {scn_path.stem} | {qdisc} | {len(keys)} | {r_med:.1%} / {r_max:.1%} "
                         f"| {h_med:.1%} / {h_max:.1%} | {l_med:.1%} / {l_max:.1%} |")
            print(lines[-1])
    save("ns3_check", summary, "\n".join(lines), args.write if summary else None, "ns3-check")


if __name__ == "__main__":
    main()
