"""MFS inside vLLM: an out-of-tree KV connector that wraps another connector.

vLLM loads :class:`~mfsched.integrations.vllm.connector.MFSConnector` by module path
(``"kv_connector_module_path": "mfsched.integrations.vllm.connector"``) in its scheduler process
and in every worker process. Only :mod:`.connector` imports vLLM; the other modules are pure and
are what the connector calls:

* :mod:`.options`   the ``kv_connector_extra_config["mfs"]`` settings (frozen, validated);
* :mod:`.planner`   scheduler side: requests, steps and flows -> the MFS policy -> a step plan;
* :mod:`.gate`      worker side: the ``TransferGate`` interface (submit / permit / complete) and
                    its in-process implementation; the data-plane daemon client plugs in here;
* :mod:`.ordering`  presents the inner connector's per-request work in MFS order;
* :mod:`.transport` MFS levels -> DSCP / SO_PRIORITY / UCX / NCCL knobs.

``MFSConnector`` is re-exported lazily, so importing this package does not import vLLM.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MFSConnector", "MFSConnectorMetadata"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import connector

        return getattr(connector, name)
    raise AttributeError(name)
