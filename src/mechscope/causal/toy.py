"""A small transformer with a known causal variable: hierarchical equality (Geiger et al. 2024).

Input ``a b c d =`` over ``N_SYMBOLS`` symbols; the output token is ``T`` if ``(a == b) == (c == d)``
and ``F`` otherwise. The high-level model (:data:`EQUALITY`) has two intermediate variables,
``V1 = (a == b)`` and ``V2 = (c == d)``. Trained on the output alone, a small transformer sits at
chance for thousands of steps (the output is an XOR of two equalities), so training also asks for
``V1`` as the next token after ``b`` and ``V2`` after ``d``: the variables are then computed at
positions 1 and 3 by construction, and the output at position 4 must read them there. A causal-attention model can hold ``V1`` only at
positions after ``b`` and only after attention has mixed positions: the embedding (``hook_resid_pre``
of layer 0) and position 0 (which sees ``a`` alone) cannot hold it, which makes them the controls.

:func:`equality_model` trains a 2-layer Llama-style model from scratch on CPU (about a minute) and
caches it in ``cache_root()/causal/<key>``; later calls load it.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from mechscope.causal.abstract import CausalModel, counterfactuals
from mechscope.causal.data import Counterfactuals
from mechscope.files import atomic_folder, cache_root
from mechscope.models.hooked import HookedModel
from mechscope.progress import progress

N_SYMBOLS = 10
EQ, TRUE, FALSE = N_SYMBOLS, N_SYMBOLS + 1, N_SYMBOLS + 2
VOCAB = N_SYMBOLS + 3
SETTINGS = {"layers": 2, "d_model": 32, "d_mlp": 128, "heads": 4, "steps": 1500, "seed": 0}

EQUALITY = CausalModel(
    inputs=("a", "b", "c", "d"),
    mechanisms={
        "V1": lambda v: v["a"] == v["b"],
        "V2": lambda v: v["c"] == v["d"],
        "O": lambda v: v["V1"] == v["V2"],
    },
    output="O",
    name="hierarchical equality",
)


def sample(rng: random.Random) -> dict[str, int]:
    """Inputs with ``a == b`` and ``c == d`` each true half the time."""
    out: dict[str, int] = {}
    for x, y in (("a", "b"), ("c", "d")):
        out[x] = rng.randrange(N_SYMBOLS)
        out[y] = (
            out[x]
            if rng.random() < 0.5
            else rng.choice([s for s in range(N_SYMBOLS) if s != out[x]])
        )
    return out


def render(inputs: dict[str, int]) -> list[int]:
    return [inputs["a"], inputs["b"], inputs["c"], inputs["d"], EQ]


def to_token(value: bool) -> int:
    return TRUE if value else FALSE


def equality_pairs(variables: tuple[str, ...], n: int, seed: int = 0) -> Counterfactuals:
    """Counterfactual pairs for interchanging ``variables`` of :data:`EQUALITY`."""
    return counterfactuals(EQUALITY, variables, sample, render, to_token, n, seed=seed)


def _config(s: dict[str, Any]) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=s["d_model"],
        intermediate_size=s["d_mlp"],
        num_hidden_layers=s["layers"],
        num_attention_heads=s["heads"],
        num_key_value_heads=s["heads"],
        max_position_embeddings=8,
        bos_token_id=EQ,
        eos_token_id=EQ,
        pad_token_id=EQ,
        tie_word_embeddings=False,
    )


def train_equality(settings: dict[str, Any] = SETTINGS, quiet: bool = True) -> Any:
    """A freshly trained HF model (see the module docstring); accuracy is in ``model.accuracy``."""
    torch.manual_seed(settings["seed"])
    hf = AutoModelForCausalLM.from_config(_config(settings))
    opt = torch.optim.AdamW(hf.parameters(), lr=3e-3, weight_decay=0.01)
    rng = random.Random(settings["seed"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=settings["steps"])
    for _ in progress(range(settings["steps"]), desc="equality toy", quiet=quiet):
        rows = [sample(rng) for _ in range(128)]
        tokens = torch.tensor([render(r) for r in rows])
        values = [EQUALITY.run(r) for r in rows]
        # V1 is read out after b (position 1), V2 after d (position 3), O after "=" (position 4)
        target = torch.tensor([[to_token(v[k]) for k in ("V1", "V2", "O")] for v in values])
        logits = hf(input_ids=tokens).logits[:, [1, 3, 4]]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), target.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return hf.eval()


def accuracy(model: HookedModel, n: int = 1000, seed: int = 1) -> float:
    rng = random.Random(seed)
    rows = [sample(rng) for _ in range(n)]
    tokens = torch.tensor([render(r) for r in rows])
    target = torch.tensor([to_token(EQUALITY.run(r)["O"]) for r in rows])
    with torch.no_grad():
        return float((model(tokens)[:, -1].argmax(-1) == target).float().mean())


def cache_folder() -> Path:
    """Where the trained toy is cached (a Hugging Face model folder)."""
    return (
        cache_root() / "causal" / ("equality-" + "-".join(f"{k}{v}" for k, v in SETTINGS.items()))
    )


def equality_model(quiet: bool = True) -> HookedModel:
    """The trained toy as a :class:`HookedModel`, from the cache or trained now (and cached)."""
    folder = cache_folder()
    if not (folder / "model.safetensors").exists():  # a concurrent trainer may publish first
        hf = train_equality(SETTINGS, quiet)
        with atomic_folder(folder) as tmp:
            hf.save_pretrained(tmp)
            (tmp / "settings.json").write_text(json.dumps(SETTINGS))
    hf = AutoModelForCausalLM.from_pretrained(folder).eval()
    return HookedModel(hf, provenance={"model": folder.name})
