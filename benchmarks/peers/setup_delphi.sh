#!/usr/bin/env bash
# Make the virtual environment of the delphi peer (PyPI eai-delphi 0.1.3), run by
# benchmarks/peers/run_delphi.py from bench_autointerp.py.
#
#   bash benchmarks/peers/setup_delphi.sh [VENV_DIR]
#
# VENV_DIR defaults to /work/peers/delphi/venv. delphi requires vLLM (a GPU build of several GB)
# but its OpenRouter client, the one that talks to any OpenAI-compatible server, does not use it:
# the package is installed without dependencies and then the dependencies its explainer, scorers
# and latent records import, on top of the system's torch and transformers
# (--system-site-packages). run_delphi.py puts a stand-in module under the name vllm. Only PyPI is
# used (through pip).
set -euo pipefail

VENV=${1:-/work/peers/delphi/venv}
PYTHON=${PYTHON:-python3}
"$PYTHON" -m venv --system-site-packages "$VENV"
"$VENV/bin/pip" install --no-deps eai-delphi==0.1.3 eai-sparsify
"$VENV/bin/pip" install orjson simple_parsing fire blobfile aiofiles asyncer beartype faiss-cpu datasets \
    tiktoken
