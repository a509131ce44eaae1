"""Sweeps and the bandwidth-scale knob."""

import json
import subprocess
import sys

import numpy as np
import pytest

from mfsched.experiments import runner
from mfsched.experiments.config import SimConfig
from mfsched.experiments.sweep import CONTENTION_FREE, SweepSpec, attainment_table, run_sweep


def test_bandwidth_scale_scales_every_link():
    base = runner.build_cluster(SimConfig()).topology
    half = runner.build_cluster(SimConfig(bandwidth_scale=0.5)).topology
    assert np.allclose(half.capacity_bps, 0.5 * base.capacity_bps)


def test_sweep_rows_and_table():
    spec = SweepSpec(SimConfig(requests=15, warmup=5, tail=0), ("agent",), (0.5, 1.0),
                     schedulers=("fs", "mfs"), contention_free_reference=True)
    rows = run_sweep(spec)
    assert [(r["rate_per_gpu"], r["scheduler"]) for r in rows] == [
        (0.5, "fs"), (0.5, "mfs"), (0.5, CONTENTION_FREE),
        (1.0, "fs"), (1.0, "mfs"), (1.0, CONTENTION_FREE)]
    table = attainment_table(rows)
    assert set(table[("agent", 1.0)][0.5]) == {"fs", "mfs", CONTENTION_FREE}


def test_sweep_cli_json():
    res = subprocess.run([sys.executable, "-m", "mfsched.cli", "sweep", "--workload", "agent",
                          "--rate", "1", "--scheduler", "fs", "--requests", "10", "--warmup",
                          "2", "--no-reference", "--json"], capture_output=True, text=True,
                         check=True)
    (row,) = json.loads(res.stdout)
    assert row["scheduler"] == "fs" and row["bandwidth_scale"] == 1.0


@pytest.mark.parametrize("args,fragment", [(["--rate", "x"], "--rate: expected"),
                                            (["--rate", "-1"], "--rate must be a positive number"),
                                            (["--bandwidth-scale", "0"], "--bandwidth-scale"),
                                            (["--executor", "mpi"], "unknown executor 'mpi'"),
                                            (["--ray-address", "auto"],
                                             "--ray-address needs --executor ray")])
def test_sweep_bad_input(args, fragment):
    res = subprocess.run([sys.executable, "-m", "mfsched.cli", "sweep", *args],
                         capture_output=True, text=True)
    assert res.returncode == 2 and fragment in res.stderr and "Traceback" not in res.stderr


def test_markdown_tables_mark_the_best_and_ratios():
    from mfsched.experiments.sweep import markdown_tables

    rows = [{"workload": "agent", "bandwidth_scale": 1.0, "rate_per_gpu": 1.0, "scheduler": s,
             "slo_attainment": a} for s, a in [("fs", 0.4), ("sjf", 0.5), ("mfs", 0.6),
                                              (CONTENTION_FREE, 0.7)]]
    text = markdown_tables(rows)
    assert "| 1 | 40.0% | 50.0% | **60.0%** | 70.0% | 1.20x | 1.50x |" in text
    rows += [dict(r, rate_per_gpu=2.0, slo_attainment=0.0) for r in rows]
    assert "| 2 | **0.0%** | **0.0%** | **0.0%** | 0.0% | n/a | n/a |" in markdown_tables(rows)


def test_nic_gbps_sets_the_nic_line_rate():
    topo = runner.build_cluster(SimConfig(nic_gbps=25)).topology
    nic = topo.link_names.index("s0.nic0.up")
    assert topo.capacity_bps[nic] == pytest.approx(25e9 * 1448 / 1502)


def test_sustainable_rate_interpolates_by_hand():
    from mfsched.experiments.sweep import sustainable_rates

    def row(rate, sched, att, seed=0):
        return {"workload": "w", "bandwidth_scale": 1.0, "rate_per_gpu": rate,
                "scheduler": sched, "slo_attainment": att, "seed": seed}

    rows = [row(0.5, "a", 0.9), row(1.0, "a", 0.7), row(1.5, "a", 0.3),  # 0.7 -> 0.3 at 1..1.5
            row(0.5, "b", 0.6), row(0.5, "b", 0.4, seed=1),  # mean 0.5 at 0.5 ...
            row(1.0, "b", 0.2), row(1.5, "b", 0.1),
            row(0.5, "c", 0.4), row(1.0, "c", 0.3), row(1.5, "c", 0.2),
            row(0.5, "d", 0.9), row(1.0, "d", 0.8), row(1.5, "d", 0.6)]
    got = sustainable_rates(rows)[("w", 1.0)]
    assert got["a"].rate == pytest.approx(1.0 + (0.7 - 0.5) / (0.7 - 0.3) * 0.5)  # 1.25
    assert got["a"].bound == ""
    assert got["b"].rate == pytest.approx(0.5)  # exactly 0.5 at 0.5, below at 1.0
    assert (got["c"].rate, got["c"].bound) == (0.5, "<")
    assert (got["d"].rate, got["d"].bound, str(got["d"])) == (1.5, ">=", ">=1.5")
