"""The circuit-tracer side of bench_graphs.py: run inside its own venv (setup_circuit_tracer.sh).

    python run_circuit_tracer.py MODEL_DIR TRANSCODER_DIR TOKENS_JSON OUT.safetensors \
        [--max-feature-nodes N] [--batch-size B]

Loads the HF model through circuit-tracer's nnsight backend and a per-layer JumpReLU transcoder
set written by mechscope in circuit-tracer's layout (layer_L.safetensors), attributes the given
token ids, and writes the adjacency matrix, the active and selected features, the logit tokens
and the wall and CPU time of ``attribute`` (metadata of the safetensors file).
"""

import argparse
import json
import time
from pathlib import Path

import torch
from circuit_tracer import attribute
from circuit_tracer.replacement_model.replacement_model_nnsight import NNSightReplacementModel
from circuit_tracer.transcoder.single_layer_transcoder import load_transcoder_set
from safetensors.torch import save_file

parser = argparse.ArgumentParser()
parser.add_argument("model")
parser.add_argument("transcoders")
parser.add_argument("tokens")
parser.add_argument("out")
parser.add_argument("--max-feature-nodes", type=int, default=None)
parser.add_argument("--batch-size", type=int, default=32)
args = parser.parse_args()

torch.set_num_threads(1)
folder = Path(args.transcoders)
n = len(list(folder.glob("layer_*.safetensors")))
paths = {i: str(folder / f"layer_{i}.safetensors") for i in range(n)}
tcs = load_transcoder_set(
    paths,
    scan="mechscope",
    feature_input_hook="mlp.hook_in",
    feature_output_hook="hook_mlp_out",
    device=torch.device("cpu"),
    lazy_encoder=False,
    lazy_decoder=False,
)
model = NNSightReplacementModel.from_pretrained_and_transcoders(args.model, tcs, device="cpu")
tokens = torch.tensor(json.loads(Path(args.tokens).read_text()))
start, cpu = time.perf_counter(), time.process_time()
graph = attribute(
    tokens, model, max_feature_nodes=args.max_feature_nodes, batch_size=args.batch_size
)
seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
save_file(
    {
        "adjacency": graph.adjacency_matrix.float().contiguous(),
        "active_features": graph.active_features.long().contiguous(),
        "selected_features": graph.selected_features.long().contiguous(),
        "logit_tokens": torch.tensor([t.vocab_idx for t in graph.logit_targets]),
        "logit_probs": graph.logit_probabilities.float().contiguous(),
    },
    args.out,
    metadata={"seconds": str(seconds), "cpu_seconds": str(cpu)},
)
print(
    json.dumps(
        {"seconds": seconds, "cpu_seconds": cpu, "n_active": int(graph.active_features.shape[0])}
    )
)
