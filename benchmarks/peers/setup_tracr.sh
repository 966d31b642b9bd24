#!/usr/bin/env bash
# Make Tracr's environment for the compiled-circuit ground truth (tracr_export.py).
#
#   bash benchmarks/peers/setup_tracr.sh [VENV_DIR] [SRC_DIR]
#
# Tracr (google-deepmind/tracr) is not on PyPI: its source goes to SRC_DIR (default
# /work/peers/tracr; a git clone, or `git archive` of a fetched mirror), pinned to the commit this
# was checked with. Its setup.py names chex, einops, dm-haiku, jax, networkx, numpy and
# typing_extensions without versions; the pins below are the versions it ran with (jax 0.10.2,
# dm-haiku 0.0.17, CPU only; no torch). VENV_DIR defaults to /work/peers/venv-tracr.
set -euo pipefail

VENV=${1:-/work/peers/venv-tracr}
SRC=${2:-/work/peers/tracr}
COMMIT=9ce2b8c82b6ba10e62e86cf6f390e7536d4fd2cd
PYTHON=${PYTHON:-python3}

if [ ! -d "$SRC/tracr" ]; then
  git clone https://github.com/google-deepmind/tracr "$SRC"
  git -C "$SRC" checkout "$COMMIT"
fi
"$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/pip"
"$PIP" install "jax==0.10.2" "jaxlib==0.10.2" "dm-haiku==0.0.17" "chex==0.1.92" "einops==0.8.2" \
  "networkx==3.6.1" "numpy==2.4.6" "typing_extensions==4.16.0"

PYTHONPATH="$SRC" "$VENV/bin/python" - <<'PY'
import haiku, jax
from tracr.compiler import compiling, lib
from tracr.rasp import rasp
m = compiling.compile_rasp_to_model(lib.make_length(), vocab={1, 2, 3}, max_seq_len=5, compiler_bos="BOS")
assert m.apply(["BOS", 1, 2, 3]).decoded == ["BOS", 3, 3, 3]
print("tracr ready: jax", jax.__version__, "dm-haiku", haiku.__version__)
PY
