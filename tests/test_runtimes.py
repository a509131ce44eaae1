"""Parallel scheduler runs start the longest first (issue 11): the order comes from the wall
times recorded by the cluster's last run; results keep the caller's order."""

from __future__ import annotations

from mfsched.experiments import runner, runtimes
from mfsched.experiments.config import SimConfig


def _cluster():
    return runner.build_cluster(SimConfig(requests=20, warmup=5, tail=0))


def test_longest_recorded_first_unrecorded_before_them(tmp_path, monkeypatch):
    monkeypatch.delenv("MFSCHED_NO_DISK_CACHE", raising=False)
    monkeypatch.setenv("MFSCHED_CACHE_DIR", str(tmp_path))
    cluster = _cluster()
    names = ["fs", "sjf", "mfs", "pias"]
    assert runtimes.longest_first(cluster, names) == [0, 1, 2, 3]  # nothing recorded yet
    runtimes.record(cluster, {"fs": 1.0, "mfs": 3.0, "pias": 2.0})
    assert runtimes.longest_first(cluster, names) == [1, 2, 3, 0]
    runtimes.record(cluster, {"fs": 5.0})  # a later run's times replace, others are kept
    assert runtimes.longest_first(cluster, names) == [1, 0, 2, 3]


def test_no_usable_record_keeps_the_callers_order(tmp_path, monkeypatch):
    monkeypatch.delenv("MFSCHED_NO_DISK_CACHE", raising=False)
    monkeypatch.setenv("MFSCHED_CACHE_DIR", str(tmp_path))
    cluster = _cluster()
    runtimes.record(cluster, {"fs": 1.0, "mfs": 3.0})
    (path,) = (tmp_path / "runtimes").iterdir()
    path.write_text("{not json")
    assert runtimes.longest_first(cluster, ["fs", "mfs"]) == [0, 1]
    runtimes.record(cluster, {"fs": 1.0, "mfs": 3.0})  # a damaged file is replaced
    monkeypatch.setenv("MFSCHED_NO_DISK_CACHE", "1")
    assert runtimes.longest_first(cluster, ["fs", "mfs"]) == [0, 1]


def test_parallel_run_starts_longest_first_and_returns_the_callers_order(tmp_path, monkeypatch):
    from mfsched.experiments import executors

    monkeypatch.delenv("MFSCHED_NO_DISK_CACHE", raising=False)
    monkeypatch.setenv("MFSCHED_CACHE_DIR", str(tmp_path))
    p = runner.prepare(SimConfig(requests=20, warmup=5, tail=0))
    runtimes.record(p.cluster, {"fs": 100.0, "mfs": 1.0})
    handed, execute = [], executors.execute
    monkeypatch.setattr(executors, "execute",
                        lambda fn, items, **kw: (handed.extend(items), execute(fn, items, **kw)))
    results = runner.run(p, ["mfs", "fs"], jobs=2)
    assert handed == ["fs", "mfs"]  # the longest recorded first
    assert [r.scheduler for r in results] == ["mfs", "fs"]
    walls = {r.scheduler: r.stats.wall_time_s for r in results}
    assert runtimes.longest_first(p.cluster, ["mfs", "fs"]) == (
        [0, 1] if walls["mfs"] > walls["fs"] else [1, 0])  # this run's times were recorded
