"""Karuna's pacing, PIAS's demotion and the oracle's order, on toys with exact timings."""

import pytest

from mfsched.policy import Stage, make_policy

from toy import MB, MS, Toy


def test_karuna_paces_deadline_flows_and_gives_the_rest_away():
    """A P2D flow of 4 MB due at 8 ms gets exactly 0.5 MB/ms; a 6 MB collective takes the
    other half, then the whole link: the P2D ends at 8 ms, the collective at 10 ms."""
    toy = Toy(make_policy("karuna"))
    toy.request(1, 8 * MS)
    toy.batch(1, [1], layers=1)
    toy.flow("p2d", 0, Stage.P2D, 1, [1], 4 * MB, target=1, deadline_s=8 * MS)
    toy.flow("coll", 0, Stage.COLLECTIVE, 1, [1], 6 * MB)
    ends = toy.run()
    assert ends["p2d"] == pytest.approx(8 * MS, rel=1e-6)
    assert ends["coll"] == pytest.approx(10 * MS, rel=1e-6)


def test_karuna_missed_deadline_flow_joins_size_levels():
    toy = Toy(make_policy("karuna"))
    toy.request(1, 1 * MS)
    toy.batch(1, [1], layers=1)
    toy.flow("late", 2 * MS, Stage.P2D, 1, [1], 1 * MB, target=1, deadline_s=1 * MS)
    assert toy.run()["late"] == pytest.approx(3 * MS)


def test_pias_demotes_by_bytes_sent():
    """Thresholds 256 KiB x 4^j. A 4 MB flow starts alone; at 1 ms a 0.2 MB flow arrives at
    the top level while the big one has sent 1 MB (level 2): the small one goes first."""
    toy = Toy(make_policy("pias"))
    toy.request(1, 1.0)
    toy.batch(1, [1], layers=1)
    toy.flow("big", 0, Stage.COLLECTIVE, 1, [1], 4 * MB)
    toy.flow("small", 1 * MS, Stage.COLLECTIVE, 1, [1], 0.2 * MB)
    ends = toy.run()
    assert ends["small"] == pytest.approx(1.2 * MS, rel=1e-6)
    assert ends["big"] == pytest.approx(4.2 * MS, rel=1e-6)


def test_oracle_serves_least_laxity_first():
    """Two collectives on one link; request 2's deadline leaves less laxity: its flow first."""
    toy = Toy(make_policy("oracle"))
    toy.request(1, 30 * MS)
    toy.request(2, 10 * MS)
    toy.batch(1, [1], layers=1, layer_compute_s=5 * MS)
    toy.batch(2, [2], layers=1, layer_compute_s=5 * MS)
    toy.flow("a", 0, Stage.COLLECTIVE, 1, [1], 2 * MB)
    toy.flow("b", 0, Stage.COLLECTIVE, 2, [2], 2 * MB)
    ends = toy.run()
    assert ends["b"] == pytest.approx(2 * MS) and ends["a"] == pytest.approx(4 * MS)


def test_policy_options_reach_the_config():
    from mfsched.errors import UserError

    p = make_policy("mfs", num_levels=10, options={"early_levels": "3", "red_tiebreak": "no"})
    assert p.config.num_levels == 10 and p.config.early_levels == 3
    assert p.config.red_tiebreak is False
    with pytest.raises(UserError, match="unknown option"):
        make_policy("mfs", options={"nope": "1"})
    with pytest.raises(UserError, match="cannot read"):
        make_policy("mfs", options={"drop_budget": "many"})
    with pytest.raises(UserError, match="early_levels"):
        make_policy("mfs", options={"early_levels": "9"})
