"""SAEDashboard's side of ``bench_features.py saedashboard`` (run in the peer's own venv).

    python saedashboard_run.py MODEL_DIR SAE_DIR TOKENS.npy HOOK N_FEATURES [CACHE_DIR]

MODEL_DIR is the model as ``save_pretrained`` wrote it (local: TransformerLens 2 reads a local
folder's config, so the model needs no hub name), SAE_DIR the SAE in SAELens's layout, TOKENS the
windows [n seq] as int64. Times ``SaeVisRunner.run`` over features 0..N-1 (model and SAE loading
excluded) and prints one JSON line: wall and process CPU seconds. SAEDashboard takes the features
256 at a time (its default ``minibatch_size_features``) and, by default, runs the model over every
token again for each group; with CACHE_DIR (its ``cache_dir`` option) the first group's model
activations are saved there and the later groups read them back instead.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import transformer_lens.loading_from_pretrained as loading
from sae_dashboard.sae_vis_data import SaeVisConfig
from sae_dashboard.sae_vis_runner import SaeVisRunner
from sae_lens import SAE, HookedSAETransformer
from transformers import AutoModelForCausalLM, AutoTokenizer

model_dir, sae_dir, tokens_path, hook, n_features = sys.argv[1:6]
cache_dir = Path(sys.argv[6]) if len(sys.argv) > 6 else None
torch.set_num_threads(1)
hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
# transformers 5 saves the tokenizer class as "TokenizersBackend", which 4.x does not know
tok_cfg = Path(model_dir) / "tokenizer_config.json"
tok_json = json.loads(tok_cfg.read_text())
tok_json["tokenizer_class"] = "PreTrainedTokenizerFast"
tok_cfg.write_text(json.dumps(tok_json))
tok = AutoTokenizer.from_pretrained(model_dir)
# TransformerLens 2 knows SmolLM2 by no official name; a local folder's config is read as such
loading.get_official_model_name = lambda name: name
model = HookedSAETransformer.from_pretrained(model_dir, hf_model=hf, tokenizer=tok, device="cpu")
sae = SAE.load_from_disk(sae_dir, device="cpu")
tokens = torch.from_numpy(np.load(tokens_path))
cfg = SaeVisConfig(hook_point=hook, features=range(int(n_features)), device="cpu", dtype="float32",
                   minibatch_size_tokens=16, minibatch_size_features=256, verbose=False,
                   cache_dir=cache_dir)  # fmt: skip
wall, cpu = time.perf_counter(), time.process_time()
data = SaeVisRunner(cfg).run(encoder=sae, model=model, tokens=tokens)
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
print(json.dumps({"wall": wall, "cpu": cpu, "features": len(data.feature_data_dict)}))
