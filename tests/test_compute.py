"""The roofline layer-time model, by hand."""

import pytest

from mfsched.workload.compute import ComputeModel, tp_allreduce_s
from mfsched.workload.hardware import GpuSpec
from mfsched.workload.models import MODELS

GPU = GpuSpec("toy", peak_flops=100.0, mem_bandwidth_bps=8 * 50.0, mem_bytes=1e9)


def test_roofline_compute_bound():
    c = ComputeModel(GPU, flops_efficiency=0.5, memory_efficiency=1.0, step_overhead_s=0.0)
    # 100 FLOP at 50 FLOP/s = 2 s; 10 bytes at 50 B/s = 0.2 s
    assert c.roofline_s(100.0, 10.0) == pytest.approx(2.0)


def test_roofline_memory_bound_with_overhead():
    c = ComputeModel(GPU, flops_efficiency=1.0, memory_efficiency=0.5, step_overhead_s=0.1)
    # 10 FLOP = 0.1 s; 100 bytes at 25 B/s = 4 s; + 0.1
    assert c.roofline_s(10.0, 100.0) == pytest.approx(4.1)


def test_tp_allreduce():
    # ring: 2 (4-1)/4 = 1.5 x payload over the link
    assert tp_allreduce_s(100.0, 4, 10.0) == pytest.approx(15.0)
    assert tp_allreduce_s(100.0, 1, 10.0) == 0.0


def test_decode_step_is_memory_bound_and_positive():
    from mfsched.workload.hardware import GPUS

    c = ComputeModel(GPUS.get("a100"))
    m = MODELS.get("llama-3-8b")
    t = c.decode_step_s(m, tp=1, context_tokens=1000)
    # reading ~ 8 GB of weights at 0.8 x 2 TB/s is about 5 ms
    assert 0.003 < t < 0.01


def test_efficiency_validation():
    with pytest.raises(ValueError):
        ComputeModel(GPU, flops_efficiency=0.0)
