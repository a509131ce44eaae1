import pytest

from mfsched.errors import UserError
from mfsched.workload.deployment import (
    Parallelism,
    build_deployment,
    kv_cache_tokens_per_unit,
    weight_bytes_per_gpu,
)
from mfsched.workload.hardware import GPUS
from mfsched.workload.models import MODELS


def test_testbed_placement():
    m = MODELS.get("mixtral-8x7b")
    d = build_deployment(m, Parallelism(tp=1, ep=8), num_gpus=32, gpus_per_server=4)
    assert len(d.instances) == 2 and d.prefill_gpus == 16
    u = d.instances[1][3]
    assert u.gpus == (11,) and u.decode_gpus == (27,) and u.unit_id == 11
    assert d.server_of(11) == 2


def test_tp_units_and_decode_mirror():
    m = MODELS.get("mixtral-8x22b")
    d = build_deployment(m, Parallelism(tp=4, ep=8), num_gpus=128, gpus_per_server=8)
    assert len(d.instances) == 2
    assert d.instances[0][1].gpus == (4, 5, 6, 7)
    assert d.instances[0][1].decode_gpus == (68, 69, 70, 71)


def test_dense_sp_unit_is_whole_instance():
    m = MODELS.get("llama-3-8b")
    d = build_deployment(m, Parallelism(tp=4, sp=4), num_gpus=64, gpus_per_server=8)
    assert [len(i) for i in d.instances] == [1, 1]
    assert d.instances[0][0].gpus == tuple(range(16))


def test_validation():
    m = MODELS.get("mixtral-8x7b")
    with pytest.raises(UserError, match="do not fit"):
        build_deployment(m, Parallelism(tp=1, ep=8), num_gpus=8, gpus_per_server=4)
    with pytest.raises(UserError, match="dense"):
        Parallelism(ep=2).validate(MODELS.get("llama-3-8b"))
    with pytest.raises(UserError, match="MoE"):
        Parallelism(sp=2).validate(m)


def test_weights_and_kv_capacity_mixtral_on_3090():
    m, p = MODELS.get("mixtral-8x7b"), Parallelism(tp=1, ep=8)
    # per GPU: 32 x (attention 83.9 MB + one expert 352.3 MB) + embeddings 524 MB
    expected = 32 * (4096 * 10240 * 2 + 3 * 4096 * 14336 * 2) + 2 * 32000 * 4096 * 2
    assert weight_bytes_per_gpu(m, p) == expected
    tokens = kv_cache_tokens_per_unit(m, p, GPUS.get("rtx3090").mem_bytes)
    assert tokens == int((24 * 2**30 * 0.9 - expected) / (4096 * 32))


def test_model_that_does_not_fit():
    with pytest.raises(UserError, match="does not fit"):
        kv_cache_tokens_per_unit(MODELS.get("grok-2"), Parallelism(tp=1, ep=8),
                                 GPUS.get("rtx3090").mem_bytes)
