#!/usr/bin/env bash
# Make the virtual environment of llama.cpp's OpenAI-compatible server (PyPI llama-cpp-python with
# its server extra), used by tests/autointerp/test_llama_server.py and bench_autointerp.py.
#
#   bash benchmarks/peers/setup_llamacpp.sh [VENV_DIR]
#
# VENV_DIR defaults to /work/peers/llamacpp/venv (where the test looks; or set
# MECHSCOPE_LLAMA_PYTHON to the venv's python). pip compiles llama.cpp from source (CPU only,
# no -march=native so the build runs on any x86-64): about 40 minutes on 2 shared cores at load
# 6-12, a few minutes on an idle 8-core machine. Only PyPI is used (through pip).
set -euo pipefail

VENV=${1:-/work/peers/llamacpp/venv}
PYTHON=${PYTHON:-python3}
"$PYTHON" -m venv "$VENV"
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2}
export CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
nice -n 10 "$VENV/bin/pip" install --no-cache-dir 'llama-cpp-python[server]'
"$VENV/bin/python" -c "import llama_cpp, llama_cpp.server; print('llama-cpp-python', llama_cpp.__version__)"
