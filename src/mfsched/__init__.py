"""mfsched: MFS, the multi-stage flow scheduler for disaggregated LLM serving.

Sun et al., "Multi-stage Flow Scheduling for LLM Serving" (arXiv 2603.17456). The package is
layered so that data flows one way::

    workload (models, hardware, deployment, traces)  ->  sim (engine, network)  ->
    metrics (records, summary)  ->  cli / report

and the scheduling policies in :mod:`mfsched.policy` are pure objects that every engine calls
unchanged. Start with ``mfsched simulate --help`` or :func:`mfsched.experiments.runner.run`.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
