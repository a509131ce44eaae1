"""mfsched: MFS, the multi-stage flow scheduler for disaggregated LLM serving.

Sun et al., "Multi-stage Flow Scheduling for LLM Serving" (arXiv 2603.17456). The package is
layered so that data flows one way::

    workload (models, hardware, deployment, traces)  ->  sim (engine, network)  ->
    records  ->  metrics (summary)  ->  cli / report

and the scheduling policies in :mod:`mfsched.policy` are pure objects that every runtime (the
simulator, the data-plane daemons, the vLLM connector) drives through one
:class:`~mfsched.policy.driver.PolicyDriver`.

The curated API (imported lazily: ``import mfsched.policy`` stays free of numpy and friends)::

    import mfsched

    config = mfsched.SimConfig(workload="agent", rate_per_gpu=1.0, requests=200, warmup=50)
    for result in mfsched.run(config, ["fs", "mfs"]):
        print(result.scheduler, result.summary.slo_attainment)

* configuration and runs: :class:`SimConfig`, :func:`prepare` (cluster and request stream,
  shared by several schedulers), :func:`run` (several schedulers), :func:`run_scheduler`
  (one, on a prepared scenario), :class:`RunResult`;
* results: :func:`summarize`, :class:`Summary` (attainment, TTFT, CCT, earliness);
* policies: :func:`make_policy`, :data:`SCHEDULERS` (the registry), :class:`PolicyDriver`
  (to drive a policy from a runtime of your own);
* the emulated testbed (root): :func:`run_testbed`, :class:`EmulationConfig`.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from . import _compiled

_compiled.install()  # before any compiled module is imported (mfsched._compiled)

__version__ = "0.1.0"

_API = {
    "SimConfig": "mfsched.experiments.config",
    "prepare": "mfsched.experiments.runner",
    "run": "mfsched.experiments.runner",
    "run_scheduler": "mfsched.experiments.runner",
    "RunResult": "mfsched.experiments.runner",
    "summarize": "mfsched.metrics",
    "Summary": "mfsched.metrics",
    "make_policy": "mfsched.policy",
    "SCHEDULERS": "mfsched.policy",
    "PolicyDriver": "mfsched.policy",
    "run_testbed": "mfsched.dataplane.testbed",
    "EmulationConfig": "mfsched.dataplane.testbed",
}

__all__ = ["__version__", *sorted(_API)]


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'mfsched' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
