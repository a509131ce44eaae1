"""The multi-stage LLM-serving workload model.

Who calls what: the simulator (:mod:`mfsched.sim`) and the emulated testbed build a
:class:`~mfsched.workload.deployment.Deployment` from a model and hardware spec, feed it
:class:`~mfsched.workload.requests.Request` streams from traces or generators, and ask
:mod:`mfsched.workload.stages` for the per-layer Stage 1/2/3 flows of each batch. Nothing here
knows about time stepping or networks; every formula lives in exactly one function.
"""
