"""The SLO memo (issue 11): equivalent routes share an isolated TTFT, and the on-disk store is
keyed by everything the TTFT depends on (a changed input misses, an equal one hits)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mfsched.experiments import runner
from mfsched.experiments.config import SimConfig
from mfsched.sim.serving import IsolatedTtft
from mfsched.sim.slomemo import SloStore, cluster_digest, route_class


class _Checked(IsolatedTtft):
    """Every look-up is also simulated afresh with the route it names (not the memo's)."""

    def __init__(self, cluster) -> None:
        super().__init__(cluster)
        self.exact: dict[tuple, float] = {}
        self.lookups = 0

    def __call__(self, req, route):
        got = super().__call__(req, route)
        self.lookups += 1
        key = (route.unit, route.remote_unit, req.input_tokens, route.local_tokens,
               route.remote_tokens)
        if key not in self.exact:
            self.exact[key] = self.simulate(req, route)
        assert got == self.exact[key], key  # identical, not close
        return got


@pytest.mark.parametrize("cfg", [
    SimConfig(requests=60, warmup=20, tail=10),
    SimConfig(scenario="fattree", servers=16, workload="conv", requests=50, warmup=10, tail=5,
              rate_per_gpu=0.7),
], ids=["testbed", "fattree"])
def test_every_memo_hit_equals_a_fresh_isolated_run(cfg):
    p = runner.prepare(cfg)
    checked = _Checked(p.cluster)
    p = replace(p, slo_fn=lambda req, route: cfg.slo_scale * checked(req, route))
    runner.run(p, ["fs", "mfs"])
    classes = {(route_class(p.cluster, u, r)) for u, r in checked._classes}
    # the memo shares entries across equivalent routes: fewer classes than distinct routes
    assert len(classes) < len(checked._classes)
    assert checked.lookups > len(checked.exact) > 0
    assert checked.runs - len(checked.exact) < len(checked.exact)  # memo misses < routes


def test_equivalent_routes_of_different_instances_share_a_class():
    p = runner.prepare(SimConfig(requests=10, warmup=0, tail=0))
    instances = p.cluster.deployment.instances
    assert len(instances) >= 2
    first, second = instances[0][0].unit_id, instances[1][0].unit_id
    assert route_class(p.cluster, first, -1) == route_class(p.cluster, second, -1)
    # a remote fetch is another shape than a local route
    assert route_class(p.cluster, first, second) != route_class(p.cluster, first, -1)


def _cluster(**kw):
    return runner.build_cluster(SimConfig(requests=10, warmup=0, tail=0, **kw))


def test_digest_changes_with_any_input_and_not_otherwise():
    base = cluster_digest(_cluster())
    assert cluster_digest(_cluster()) == base
    for kw in ({"model": "llama-3-8b"}, {"flops_efficiency": 0.5}, {"bandwidth_scale": 0.5},
               {"scenario": "fattree", "servers": 16}):
        assert cluster_digest(_cluster(**kw)) != base, kw


def test_disk_store_hits_for_an_equal_cluster_and_misses_for_a_changed_one(tmp_path,
                                                                           monkeypatch):
    monkeypatch.setenv("MFSCHED_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("MFSCHED_NO_DISK_CACHE", raising=False)
    cfg = SimConfig(requests=20, warmup=5, tail=0)
    p = runner.prepare(cfg)
    assert p.isolated is not None and p.isolated.store.entries == {}
    runner.run(p, ["fs"])
    saved = dict(p.isolated.store.entries)
    assert saved and p.isolated.runs == len(saved)
    assert list((tmp_path / "slo").glob("*.json"))

    again = runner.prepare(cfg)  # an equal cluster: every entry read back, no isolated run
    assert again.isolated.store.entries == saved
    runner.run(again, ["fs"])
    assert again.isolated.runs == 0

    changed = runner.prepare(replace(cfg, bandwidth_scale=0.5))  # another cluster: misses
    assert changed.isolated.store.entries == {}
    assert changed.isolated.store.path != p.isolated.store.path


def test_store_merges_parallel_writers(tmp_path):
    path = tmp_path / "slo" / "x.json"
    a, b = SloStore(path), SloStore(path)
    a.put("1,0,0,c", 0.5)
    b.put("2,0,0,c", 0.25)
    a.save()
    b.save()
    assert SloStore(path).entries == {} and b.entries == {"1,0,0,c": 0.5, "2,0,0,c": 0.25}
    path.write_text("not json")
    c = SloStore(path)
    c.put("3,0,0,c", 1.0)
    c.save()  # a damaged file is replaced, not an error
    assert c.entries == {"3,0,0,c": 1.0}


def test_parallel_workers_return_their_memo_entries_and_progress(tmp_path, monkeypatch):
    monkeypatch.delenv("MFSCHED_NO_DISK_CACHE", raising=False)
    cfg = SimConfig(requests=20, warmup=5, tail=0)
    entries = {}
    for jobs in (1, 2):
        monkeypatch.setenv("MFSCHED_CACHE_DIR", str(tmp_path / str(jobs)))
        p = runner.prepare(cfg)
        last: dict[str, tuple[int, int]] = {}

        def tick(name, done, total, last=last):
            last[name] = (done, total)

        results = runner.run(p, ["fs", "mfs"], jobs=jobs, progress=tick)
        assert [r.scheduler for r in results] == ["fs", "mfs"]
        assert set(last) == {"fs", "mfs"} and all(d == t for d, t in last.values())
        entries[jobs] = runner.prepare(cfg).isolated.store.entries  # read back from disk
    assert entries[1] and entries[2] == entries[1]
