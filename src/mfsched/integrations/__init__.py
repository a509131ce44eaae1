"""Drivers that plug the pure policy core into third-party serving engines.

Nothing in the core package imports from here; each subpackage imports its engine lazily, so
``import mfsched`` works without any engine installed. :mod:`mfsched.integrations.vllm` is the
vLLM KV-connector plugin (optional extra ``vllm``).
"""
