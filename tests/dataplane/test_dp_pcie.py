"""The daemon's PCIe lanes: intra-server members share GPU links as in the simulator.

Hand-computed with 100 bytes/s per PCIe direction and 4 GPUs per server.
"""

from __future__ import annotations

import math

import pytest

from mfsched.dataplane.pcie import PcieLanes
from mfsched.sim.allocation import priority_key


def test_members_from_one_gpu_share_its_out_link_fairly():
    lanes = PcieLanes(100.0, 4)
    assert lanes.add(0.0, (1, 0), 0, 1, 100.0) == []
    assert lanes.add(0.0, (2, 0), 0, 2, 300.0) == []
    assert lanes.rate((1, 0)) == pytest.approx(50.0)  # GPU 0's out-link, split in two
    assert lanes.next_finish_s() == pytest.approx(2.0)  # 100 bytes at 50 B/s
    assert lanes.step(2.0) == [(1, 0)]
    assert lanes.rate((2, 0)) == pytest.approx(100.0)  # alone now; 200 bytes left
    assert lanes.remaining(2.5, (2, 0)) == pytest.approx(150.0)
    assert lanes.next_finish_s() == pytest.approx(4.0)
    assert lanes.step(4.0) == [(2, 0)] and len(lanes) == 0
    assert lanes.next_finish_s() == math.inf


def test_disjoint_gpu_pairs_do_not_interfere_and_gpus_wrap_per_server():
    lanes = PcieLanes(100.0, 4)
    lanes.add(0.0, (1, 0), 4, 5, 100.0)  # GPUs 4 and 5 are local GPUs 0 and 1 of server 1
    lanes.add(0.0, (1, 1), 6, 7, 100.0)
    assert lanes.rate((1, 0)) == lanes.rate((1, 1)) == pytest.approx(100.0)


def test_strict_priority_then_promotion_and_rate_cap():
    lanes = PcieLanes(100.0, 4)
    lanes.add(0.0, (1, 0), 0, 1, 100.0, priority_key(2, 0))
    lanes.add(0.0, (2, 0), 2, 1, 100.0, priority_key(1, 0))  # same in-link of GPU 1, higher
    assert (lanes.rate((1, 0)), lanes.rate((2, 0))) == pytest.approx((0.0, 100.0))
    assert lanes.set_priority(0.5, (1, 0), priority_key(0, 0)) == []  # promoted above
    assert (lanes.rate((1, 0)), lanes.rate((2, 0))) == pytest.approx((100.0, 0.0))
    assert lanes.remaining(0.5, (2, 0)) == pytest.approx(50.0)
    lanes.set_cap(0.5, (1, 0), 40.0)  # paced: the other one takes the rest
    assert (lanes.rate((1, 0)), lanes.rate((2, 0))) == pytest.approx((40.0, 60.0))


def test_shares_weight_members_like_connections():
    """A member striped over 2 connections gets twice a 1-connection member's rate on GPU 0's
    out-link: 2r + r = 100."""
    lanes = PcieLanes(100.0, 4)
    lanes.add(0.0, (1, 0), 0, 1, 100.0, share=2)
    lanes.add(0.0, (2, 0), 0, 2, 100.0)
    assert (lanes.rate((1, 0)), lanes.rate((2, 0))) == pytest.approx((200 / 3, 100 / 3))
