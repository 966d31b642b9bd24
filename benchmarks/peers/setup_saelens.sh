#!/usr/bin/env bash
# Make the virtual environment for the SAELens peer measurement (run_saelens_topk.py).
#
#   bash benchmarks/peers/setup_saelens.sh [VENV_DIR]
#
# VENV_DIR defaults to /work/peers/venv-saelens. SAELens pins transformer-lens < 4, which cannot live
# next to mechscope's transformer-lens 4 oracle, so it gets its own venv. Only PyPI is used (pip).
# Measured with sae-lens 6.54.12 (it pulled transformer-lens 3.9.0, transformers 5.24.0); the
# install took about 4.5 minutes on the benchmark machine.
set -euo pipefail

VENV=${1:-/work/peers/venv-saelens}
PYTHON=${PYTHON:-python3}
SAE_LENS_VERSION=${SAE_LENS_VERSION:-6.54.12}

"$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/pip"
"$PIP" install --upgrade pip
# torch first, pinned: an unpinned torch pulls a multi-GB CUDA build.
"$PIP" install torch==2.13.0
"$PIP" install "sae-lens==$SAE_LENS_VERSION"

"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
from sae_lens.saes.topk_sae import TopKTrainingSAE  # noqa: F401
from sae_lens.training.sae_trainer import SAETrainer  # noqa: F401
for name in ("torch", "sae-lens", "transformer-lens", "transformers", "safetensors"):
    print(f"{name}=={md.version(name)}")
PY
echo "ready: python benchmarks/bench_harvest.py sae --acts STORE --peer-python $VENV/bin/python"
