#!/bin/sh
# Install everything the whole test suite needs into the CURRENT Python environment:
# mfsched itself with its test, ray and report extras (tests/test_experiments.py runs a grid on
# a local Ray instance; tests/test_report.py draws with matplotlib and opens the page with
# playwright), the CPU build of torch 2.13.0, and a "lite" vLLM 0.33.0 (its Python code without
# the CUDA torch, triton or other GPU wheels), which is all that tests/integrations needs:
# vLLM's scheduler and KV-connector classes on the CPU.
#
# The report test drives Debian's Chromium (/usr/bin/chromium: apt-get install chromium; .ci/run
# installs it), never a browser build downloaded by playwright.
#
# Idempotent (pip skips what is installed). Run from anywhere:  sh scripts/install-test-deps.sh
#
# torch: the CPU wheel must come from a local wheel folder or index (on this project's machines
# pip's config points at one). The script refuses to fall back to PyPI's torch, a CUDA build of
# several GB. Elsewhere, point pip at a CPU build first, e.g.
#   MFSCHED_TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu" sh scripts/...
# Set MFSCHED_EDITABLE=0 to install mfsched non-editable.
set -eu

here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
root=$(dirname -- "$here")
TORCH_VERSION=2.13.0
VLLM_VERSION=0.33.0
XGRAMMAR_VERSION=0.2.8
# --no-compile: byte-compiling vLLM's and transformers' thousands of modules at install time
# costs about a minute on two cores; Python compiles the few modules the tests import lazily.
PIP="python -m pip"
PIP_INSTALL="$PIP install -q --no-compile"
export PIP_DISABLE_PIP_VERSION_CHECK=1

start=$(date +%s)

# 1. The CPU torch, only from what is reachable without PyPI's CUDA build.
if python -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('$TORCH_VERSION') else 1)" 2>/dev/null; then
    echo "install-test-deps: torch $TORCH_VERSION already installed"
elif [ -n "${MFSCHED_TORCH_PIP_ARGS:-}" ]; then
    # shellcheck disable=SC2086
    $PIP_INSTALL "torch==$TORCH_VERSION" $MFSCHED_TORCH_PIP_ARGS
else
    # --no-index: only pip's find-links folders, so PyPI's CUDA build can never be chosen.
    if ! $PIP_INSTALL --no-index --no-deps "torch==$TORCH_VERSION"; then
        echo "install-test-deps: no local CPU wheel of torch $TORCH_VERSION found by pip" >&2
        echo "  (pip's find-links); set MFSCHED_TORCH_PIP_ARGS to a CPU package index." >&2
        exit 1
    fi
    $PIP_INSTALL "torch==$TORCH_VERSION"  # torch is there now: only its small dependencies
fi
python -W ignore -c "import torch, sys; v = torch.__version__; print('install-test-deps: torch', v); sys.exit(0 if torch.version.cuda is None else 'torch is a CUDA build: ' + v)"

echo "install-test-deps: torch step done at $(( $(date +%s) - start )) s"

# 2. mfsched with its test, ray and report extras, and vLLM's pure-Python dependencies (pinned).
if [ "${MFSCHED_EDITABLE:-1}" = "1" ]; then
    $PIP_INSTALL -e "$root[test,ray,report]" -r "$here/vllm-lite-requirements.txt"
else
    $PIP_INSTALL "$root[test,ray,report]" -r "$here/vllm-lite-requirements.txt"
fi

echo "install-test-deps: mfsched and vLLM's dependencies done at $(( $(date +%s) - start )) s"

# 3. vLLM and xgrammar without their dependency trees (which would pull CUDA torch, triton).
$PIP_INSTALL --no-deps "vllm==$VLLM_VERSION" "xgrammar==$XGRAMMAR_VERSION"

# 4. Check: vLLM's connector API imports on this torch, and the version is the tested one.
python - <<PY
import os
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch, vllm
from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorBase_V1  # noqa: F401
from vllm.v1.core.sched.scheduler import Scheduler  # noqa: F401
assert vllm.__version__.startswith("$VLLM_VERSION"), vllm.__version__
assert torch.version.cuda is None, torch.__version__
print("install-test-deps: vllm", vllm.__version__, "torch", torch.__version__)
PY
echo "install-test-deps: done in $(( $(date +%s) - start )) s"
