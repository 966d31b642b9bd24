#!/usr/bin/env bash
# Make the virtual environment for the SAEDashboard peer measurement (bench_features.py saedashboard).
#
#   bash benchmarks/peers/setup_saedashboard.sh [VENV_DIR]
#
# VENV_DIR defaults to /work/peers/saedashboard. SAEDashboard 0.8.0 pins transformer-lens < 3,
# transformers < 4.57 and numpy < 2, which cannot live next to mechscope's own pins, so it gets its
# own venv. The venv sees the system's site-packages, so it reuses the installed torch (2.13.0,
# CPU); a constraints file pins torch (pip would otherwise replace it with a newer one) and numpy.
# Only PyPI is used (pip). Ran to completion on 2026-12-05.
set -euo pipefail

VENV=${1:-/work/peers/saedashboard}
PYTHON=${PYTHON:-python3}
SAE_DASHBOARD_VERSION=${SAE_DASHBOARD_VERSION:-0.8.0}
TORCH_VERSION=$("$PYTHON" -c "import torch; print(torch.__version__.split('+')[0])")

"$PYTHON" -m venv --system-site-packages "$VENV"
PIP="$VENV/bin/pip"
printf 'torch==%s\nnumpy==1.26.4\n' "$TORCH_VERSION" > "$VENV/constraints.txt"
"$PIP" install -c "$VENV/constraints.txt" "sae-dashboard==$SAE_DASHBOARD_VERSION"
# the system's pyarrow needs numpy 2: a version built for numpy 1 goes in the venv
"$PIP" install -c "$VENV/constraints.txt" "pyarrow==19.0.1"
# torchvision/torchaudio pulled in for another torch break `import transformers` models; unused
"$PIP" uninstall -y torchvision torchaudio || true

"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
from sae_dashboard.sae_vis_data import SaeVisConfig  # noqa: F401
from sae_dashboard.sae_vis_runner import SaeVisRunner  # noqa: F401
for name in ("torch", "sae-dashboard", "sae-lens", "transformer-lens", "transformers", "numpy"):
    print(f"{name}=={md.version(name)}")
PY
