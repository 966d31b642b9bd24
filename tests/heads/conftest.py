"""A planted induction circuit: a 2-layer attention-only Llama trained, in the test session, to
continue a segment that repeats at a random offset.

Model: ``LlamaConfig`` (RoPE, RMSNorm), d_model 64, 2 layers x 4 heads (d_head 16), vocabulary
128, context 32, untied embeddings. It is attention-only: every MLP weight is zeroed and frozen
(``down_proj`` = 0, so each MLP adds exactly 0), which keeps it a stock HF model that mechscope
hooks like any other. RoPE gives a previous-token head for free; with learned absolute positions
(GPT-2) the same budget did not learn induction.

Data: 32 random tokens; a segment of 10 tokens is copied from a random offset a to a random later
offset b >= a + 10, so position alone cannot predict the repeat. The loss is taken on the 9
predictable tokens (b+1 .. b+9) only. A concave group penalty ``0.05 * sum_h sqrt(||W_O^h||_F)``
on each layer's heads pushes the model to use few heads (without it, all four layer-1 heads
learn induction and no single ablation matters). AdamW, lr 3e-3, batch 32, one thread, seeded;
after 800 steps (induction forms by ~350; the rest lets the penalty prune), training stops once
the running loss on repeated tokens is below 0.4.
"""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from mechscope import HookedModel

V, T, L = 128, 32, 10
MIN_STEPS, MAX_STEPS, STOP, LAM = 800, 1500, 0.4, 0.05


def toy_batch(gen: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens [n T] with a repeated segment; mask [n T-1] of the predictable next tokens."""
    x = torch.randint(0, V, (n, T), generator=gen)
    mask = torch.zeros(n, T - 1, dtype=torch.bool)
    for i in range(n):
        a = int(torch.randint(0, T - 2 * L + 1, (1,), generator=gen))
        b = int(torch.randint(a + L, T - L + 1, (1,), generator=gen))
        x[i, b : b + L] = x[i, a : a + L]
        mask[i, b : b + L - 1] = True  # predicting x[b+1 .. b+L-1] from positions b .. b+L-2
    return x, mask


def build_toy(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=V, max_position_embeddings=T, hidden_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, head_dim=16, intermediate_size=4,
        tie_word_embeddings=False,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    for layer in model.model.layers:
        for p in layer.mlp.parameters():
            p.data.zero_()
            p.requires_grad_(False)
    return model


def train_toy(model: LlamaForCausalLM, seed: int = 0) -> tuple[int, float]:
    """Train until the running repeated-token loss < STOP; returns (steps, running loss)."""
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=3e-3, weight_decay=0.0)
    model.train()
    ema = float("inf")
    for step in range(MAX_STEPS):
        x, mask = toy_batch(gen, 32)
        logp = model(x).logits[:, :-1].log_softmax(-1).gather(-1, x[:, 1:, None])[..., 0]
        task = -logp[mask].mean()
        loss = task
        for layer in model.model.layers:
            w = layer.self_attn.o_proj.weight  # [d_model n_heads*d_head]
            loss = loss + LAM * w.view(w.shape[0], 4, -1).norm(dim=(0, 2)).add(1e-4).sqrt().sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema = task.item() if step == 0 else 0.9 * ema + 0.1 * task.item()
        if ema < STOP and step + 1 >= MIN_STEPS:
            break
    model.eval()
    return step + 1, ema


@pytest.fixture(scope="session")
def toy_induction() -> dict:
    """{"model": the trained toy as a HookedModel, "steps", "loss" (running), "stop", "vocab"}."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = build_toy()
        steps, ema = train_toy(model)
    finally:
        torch.set_num_threads(threads)
    return {"model": HookedModel(model), "steps": steps, "loss": ema, "stop": STOP, "vocab": V}
