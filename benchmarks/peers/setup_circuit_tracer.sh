#!/usr/bin/env bash
# Make the virtual environment for the circuit-tracer peer measurement (run_circuit_tracer.py).
#
#   bash benchmarks/peers/setup_circuit_tracer.sh [VENV_DIR]
#
# circuit-tracer 0.5.0 (PyPI) pins transformers<=4.57.3, which clashes with mechscope's
# transformers 5.x, so it gets its own environment. VENV_DIR defaults to
# /work/peers/venv-circuit-tracer. Only PyPI is used (through pip).
set -euo pipefail

VENV=${1:-/work/peers/venv-circuit-tracer}
PYTHON=${PYTHON:-python3}

"$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/pip"
"$PIP" install --upgrade pip
# 1. torch first, pinned: an unpinned torch pulls a multi-GB CUDA build.
"$PIP" install torch==2.13.0
# 2. circuit-tracer and what it pins (its nnsight backend loads models TransformerLens lacks).
"$PIP" install circuit-tracer==0.5.0 "nnsight==0.6.3" "transformers==4.57.3" "huggingface-hub<1.0" safetensors pyyaml

"$VENV/bin/python" - <<'PY'
import circuit_tracer, torch, transformers
print("circuit-tracer ready: torch", torch.__version__, "transformers", transformers.__version__)
PY
