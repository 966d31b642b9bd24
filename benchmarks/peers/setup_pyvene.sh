#!/usr/bin/env bash
# Make the virtual environment for the pyvene peer measurement (run_pyvene_das.py).
#
#   bash benchmarks/peers/setup_pyvene.sh [VENV_DIR]
#
# VENV_DIR defaults to /work/peers/venv-pyvene. The venv sees the system site packages (torch,
# transformers, mechscope's own dependencies) so that both sides run the same torch on the same
# model weights; pyvene itself is installed without its dependencies (it asks for datasets,
# plotnine, ipywidgets ... which an intervention does not use). Only PyPI is used (through pip).
# Measured with pyvene 0.1.8, torch 2.13.0+cpu, transformers 5.25.0.
set -euo pipefail

VENV=${1:-/work/peers/venv-pyvene}
PYTHON=${PYTHON:-python3}

"$PYTHON" -m venv --system-site-packages "$VENV"
"$VENV/bin/pip" install --no-deps pyvene==0.1.8

"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
import pyvene  # noqa: F401
for name in ("pyvene", "torch", "transformers"):
    print(f"{name}=={md.version(name)}")
PY
echo "ready: $VENV/bin/python benchmarks/peers/run_pyvene_das.py SPEC.json OUT.pt"
