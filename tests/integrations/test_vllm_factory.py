"""(a) vLLM's own connector factory loads MFSConnector from its module path, builds the inner
connector with the outer engine_id, and rejects bad MFS settings at start-up."""

from __future__ import annotations

import pytest
from vllm.config import KVTransferConfig
from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorRole
from vllm.distributed.kv_transfer.kv_connector.v1.example_connector import ExampleConnector

from mfsched.errors import UserError
from mfsched.integrations.vllm import connector as connector_module
from mfsched.integrations.vllm.connector import MFSConnector
from mfsched.integrations.vllm.gate import InProcessGate

MODULE = "mfsched.integrations.vllm.connector"


def test_vllm_pinned_version(vllm_version):
    assert vllm_version.startswith("0.33.0")


def test_factory_resolves_module_path(vllm_env):
    cls = vllm_env.factory.get_connector_class(KVTransferConfig(
        kv_connector="MFSConnector", kv_connector_module_path=MODULE, kv_role="kv_both"))
    assert cls is MFSConnector
    assert cls is connector_module.MFSConnector


@pytest.mark.parametrize("role", [KVConnectorRole.SCHEDULER, KVConnectorRole.WORKER])
def test_factory_builds_both_roles_around_the_inner_connector(vllm_env, tmp_path, role):
    inner = {"kv_connector": "ExampleConnector",
             "kv_connector_extra_config": {"shared_storage_path": str(tmp_path)}}
    config = vllm_env.config(inner, "kv_producer", {"default_slo_s": 2.5})
    conn = vllm_env.factory.create_connector(config, role, vllm_env.kv_cache_config())
    assert isinstance(conn, MFSConnector) and conn.role == role
    assert isinstance(conn.inner, ExampleConnector) and conn.inner.role == role
    inner_ktc = conn.inner._kv_transfer_config
    assert inner_ktc.engine_id == config.kv_transfer_config.engine_id
    assert inner_ktc.kv_role == "kv_producer" and inner_ktc.kv_connector == "ExampleConnector"
    assert conn.inner._storage_path == str(tmp_path)
    assert conn.options.default_slo_s == 2.5
    assert conn.shape.num_layers == 2 and conn.shape.kv_bytes_per_token_per_layer == 256
    if role == KVConnectorRole.SCHEDULER:
        assert conn.planner is not None and conn.gate is None
    else:
        assert isinstance(conn.gate, InProcessGate) and conn.planner is None


def test_class_level_hooks_follow_the_inner_connector(vllm_env):
    config = vllm_env.config({"kv_connector": "NixlConnector"}, "kv_consumer")
    inner_cls = vllm_env.factory.get_connector_class(
        KVTransferConfig(kv_connector="NixlConnector", kv_role="kv_consumer"))
    assert MFSConnector.get_required_kvcache_layout(config) == \
        inner_cls.get_required_kvcache_layout(connector_module.inner_vllm_config(config))
    assert MFSConnector.requires_piecewise_for_cudagraph(
        {"inner": {"kv_connector": "NixlConnector"}}) == \
        inner_cls.requires_piecewise_for_cudagraph({})


def test_bad_settings_fail_at_start_up(vllm_env):
    kcc = vllm_env.kv_cache_config()
    with pytest.raises(UserError, match="unknown MFS connector option"):
        vllm_env.factory.create_connector(
            vllm_env.config({"kv_connector": "ExampleConnector"}, mfs={"slo": 1}),
            KVConnectorRole.SCHEDULER, kcc)
    with pytest.raises(UserError, match="inner"):
        vllm_env.factory.create_connector(vllm_env.config({}), KVConnectorRole.SCHEDULER, kcc)
    from mfsched.dataplane.client import DaemonUnavailable

    with pytest.raises(DaemonUnavailable, match=r"mfsched daemon at /run/mfsched\.sock"):
        vllm_env.factory.create_connector(
            vllm_env.config({"kv_connector": "ExampleConnector"},
                            mfs={"gate": "daemon:/run/mfsched.sock"}),
            KVConnectorRole.WORKER, kcc)
