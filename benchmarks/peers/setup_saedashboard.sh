#!/usr/bin/env bash
# Make the virtual environment for the SAEDashboard peer measurement (bench_features.py saedashboard).
#
#   bash benchmarks/peers/setup_saedashboard.sh [VENV_DIR]
#
# VENV_DIR defaults to /work/peers/venv-saedashboard. SAEDashboard 0.8.0 pins transformer-lens < 3
# and transformers < 4.57, which cannot live next to mechscope's own pins, so it gets its own venv.
# Only PyPI is used (pip).
# Status (2026-12-05): not run to completion. pip replaced the pinned torch 2.13.0 with 2.14.1 while
# resolving sae-dashboard 0.8.0, and the install was stopped; bench_features.py has no peer run yet.
set -euo pipefail

VENV=${1:-/work/peers/venv-saedashboard}
PYTHON=${PYTHON:-python3}
SAE_DASHBOARD_VERSION=${SAE_DASHBOARD_VERSION:-0.8.0}

"$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/pip"
"$PIP" install --upgrade pip
# torch first, pinned: an unpinned torch pulls a multi-GB CUDA build.
"$PIP" install torch==2.13.0
"$PIP" install "sae-dashboard==$SAE_DASHBOARD_VERSION"

"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
from sae_dashboard.sae_vis_data import SaeVisConfig  # noqa: F401
from sae_dashboard.sae_vis_runner import SaeVisRunner  # noqa: F401
for name in ("torch", "sae-dashboard", "sae-lens", "transformer-lens", "transformers"):
    print(f"{name}=={md.version(name)}")
PY
