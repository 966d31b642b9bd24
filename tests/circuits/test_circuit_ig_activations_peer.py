"""EAP-IG-activations against the reference library (hannamw/EAP-IG), edge by edge, on tiny random
models run live by both: the peer in its own virtual environment (``benchmarks/peers/
setup_eap_ig.sh``; ``MECHSCOPE_EAP_IG_PYTHON`` or /work/peers/venv-eapig/bin/python), skipped
where it is missing.

The two agree on every edge of a GPT-2 (learned position embedding). On a Llama they agree on
every edge but those from the input into layer 0's q/k/v ports: at its input points the reference
sets the embedding to a constant that does not require grad, so without a learned position
embedding nothing before those ports does, their backward hooks never fire, and those points add
0 to those edges. mechscope keeps that gradient; with it set to 0 (``reference_like``) the two
agree on every edge. See benchmarks/check_ig_activations.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import mechscope
from mechscope.circuits import Graph, attribute
from mechscope.circuits.eap import _activation_points, edge_scores, port_grads
from mechscope.circuits.nodes import qkv_maps, run_nodes
from mechscope.tasks import load_task
from mechscope.tasks.metrics import logit_diff

ROOT = Path(__file__).resolve().parents[2]
PEER = Path(os.environ.get("MECHSCOPE_EAP_IG_PYTHON", "/work/peers/venv-eapig/bin/python"))
STEPS = 2
PROMPTS = [  # IOI with the swap corruption: same token lengths under SmolLM2's tokenizer
    ("When Carl and Jane arrived at the station, Carl handed a flower to", " Jane", " Carl"),
    ("After Arthur and Mark went to the house, Mark gave a cake to", " Arthur", " Mark"),
    ("Then, Simon and Julia had a long argument. Afterwards Julia said to", " Simon", " Julia"),
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not PEER.is_file(), reason=f"no EAP-IG peer environment at {PEER}"),
]


def swap(prompt: str, a: str, b: str) -> str:
    """The corrupted prompt: the second mention of the subject becomes the indirect object."""
    head, tail = prompt.rsplit(b.strip(), 1)
    return head + a.strip() + tail


def write_tiny(folder: Path, family: str, tokenizer) -> None:
    """A tiny random model (names free of 'llama'/'gemma': TransformerLens picks its config
    converter by name) with SmolLM2's tokenizer, saved as an HF folder for both sides."""
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    if family == "gpt2":
        cfg = GPT2Config(n_embd=48, n_layer=3, n_head=4, n_positions=128, n_ctx=128,
                         vocab_size=len(tokenizer), initializer_range=0.1, **ids)  # fmt: skip
    else:  # grouped-query attention: 6 query heads, 2 key/value heads
        cfg = LlamaConfig(hidden_size=48, intermediate_size=80, num_hidden_layers=3,
                          num_attention_heads=6, num_key_value_heads=2, head_dim=8,
                          vocab_size=len(tokenizer), max_position_embeddings=128,
                          initializer_range=0.1, tie_word_embeddings=False, **ids)  # fmt: skip
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def peer_scores(folder: Path, task: Path, out: Path) -> torch.Tensor:
    from safetensors.torch import load_file

    cmd = [str(PEER), str(ROOT / "benchmarks/peers/run_eap_ig.py"), "--hf-folder", str(folder),
           "--task", str(task), "--methods", "EAP-IG-activations", "--ig-steps", str(STEPS),
           "--threads", "1", "--scores-dir", str(out), "--grid", "0.01", "--device", "cpu"]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""})
    assert run.returncode == 0, run.stderr[-2000:]
    (path,) = out.glob("EAP-IG-activations-*.safetensors")
    return load_file(str(path))["scores"].double()


def reference_like(model, batch, graph: Graph) -> torch.Tensor:
    """mechscope's points with the layer-0 q/k/v port gradients of the input points set to 0."""
    _, clean = run_nodes(model, batch.clean_tokens, batch.clean_mask)
    _, corrupt = run_nodes(model, batch.corrupt_tokens, batch.clean_mask)
    maps = [qkv_maps(model, layer) for layer in range(model.dims.n_layers)]
    layer0 = [j for j, p in enumerate(graph.ports) if p.startswith("a0.")]
    points = _activation_points(model, batch, clean[:, :, 0], corrupt[:, :, 0], STEPS)
    total = 0
    for embed, replace in points:
        g = port_grads(model, graph, batch, logit_diff, embed, maps, replace)
        if embed is not None:
            g[:, :, layer0] = 0
        total = total + g
    return edge_scores(graph, corrupt - clean, total / len(points))


@pytest.fixture(scope="module")
def tokenizer():
    from mechscope.models.loading import load_hf

    return load_hf("smollm2-135m", progress=False)[1]


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_ig_activations_matches_the_reference(family: str, tokenizer, tmp_path: Path) -> None:
    folder = tmp_path / f"tiny-{family.replace('llama', 'rope')}"
    write_tiny(folder, family, tokenizer)
    task = tmp_path / "ioi.jsonl"
    rows = [{"clean": p, "corrupt": swap(p, a, b), "answer": a, "wrong": b} for p, a, b in PROMPTS]
    task.write_text("".join(json.dumps(r) + "\n" for r in rows))
    theirs = peer_scores(folder, task, tmp_path / "scores")

    model = mechscope.load(str(folder), progress=False)
    batch = load_task(str(task), model).tokenize(model, prepend_bos=True)
    graph = Graph.from_dims(model.dims, ungroup_kv=True)
    ours = attribute(model, batch, method="eap-ig-activations", steps=STEPS, graph=graph)
    ours = -ours.scores.double() / len(batch)  # the reference: a loss, divided by n once more
    assert theirs.shape == ours.shape
    first = torch.zeros_like(graph.edge_mask)
    first[0, [j for j, p in enumerate(graph.ports) if p.startswith("a0.")]] = True
    top = theirs.abs().max()
    rest = graph.edge_mask & ~first
    assert (ours - theirs)[rest].abs().max() < 1e-5 * top
    if family == "gpt2":
        assert (ours - theirs)[graph.edge_mask].abs().max() < 1e-5 * top
    else:
        assert (ours - theirs)[first].abs().max() > 1e-2 * top  # the reference's dropped gradient
        like = -reference_like(model, batch, graph).double() / len(batch)
        assert (like - theirs)[graph.edge_mask].abs().max() < 1e-5 * top


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
