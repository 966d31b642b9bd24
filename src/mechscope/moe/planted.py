"""A small mixture of experts trained on CPU whose experts serve known token classes.

The ground truth for :func:`mechscope.moe.moe_analysis`. The vocabulary is split into
``n_classes`` classes of ``per_class`` words; the task is a chain ``x, f(x), f(f(x)), ...`` with
``f`` a fixed random permutation inside each class, so the next token depends only on the
current one and the MoE layers must learn ``f`` class by class. During training every MoE layer's
router logits get ``+force`` on the planted expert ``plan[c]`` of each token's class ``c`` (so that
expert is always among the chosen ones and learns the class), and a cross-entropy term teaches the
router to pick ``plan[c]`` on its own. After training, without any forcing, class ``c`` is routed
to ``plan[c]``; ablating it should hurt class ``c`` most.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["PlantedMoE", "chain_batch", "chain_task", "train_planted_moe"]


@dataclass(frozen=True)
class PlantedMoE:
    """The trained model and its ground truth."""

    model: Any  # HookedModel
    classes: dict[int, str]  # token id -> class name
    class_names: list[str]
    plan: dict[str, int]  # class name -> the expert forced to serve it
    successor: Tensor  # [d_vocab] the next token of each token (f)
    final_loss: float


def chain_batch(successor: Tensor, starts: Tensor, length: int) -> Tensor:
    """Windows ``[x, f(x), f(f(x)), ...]`` [batch length] from start tokens [batch]."""
    out = [starts]
    for _ in range(length - 1):
        out.append(successor[out[-1]])
    return torch.stack(out, 1)


def chain_task(planted: PlantedMoE, n: int, length: int = 8, seed: int = 0) -> Any:
    """A :class:`~mechscope.tasks.base.TaskBatch` of ``n`` chains (random starts, ``seed``): the
    answer is the next token ``f(x)``, the wrong answer another token of the same class (so the
    logit difference measures the class's permutation, the planted expert's job); the corrupted
    prompts are other chains of the same length."""
    from mechscope.tasks.base import TaskBatch

    g = torch.Generator().manual_seed(seed)
    ids = torch.tensor(sorted(planted.classes))
    clean, corrupt = (chain_batch(planted.successor, ids[torch.randint(len(ids), (n,), generator=g)],
                                  length) for _ in range(2))  # fmt: skip
    answer = planted.successor[clean[:, -1]]
    members = {c: [i for i, k in planted.classes.items() if k == c] for c in planted.class_names}
    wrong = []
    for a in answer.tolist():
        others = [i for i in members[planted.classes[a]] if i != a]
        wrong.append(others[int(torch.randint(len(others), (), generator=g))])
    last = torch.full((n,), length - 1)
    ones = torch.ones_like(clean)
    return TaskBatch("chain", clean, corrupt, ones, ones, answer, torch.tensor(wrong), last, last)


def _vocab(n_classes: int, per_class: int, seed: int) -> tuple[Any, dict[int, str], Tensor]:
    from mechscope.models.tiny import tiny_tokenizer

    names = [chr(ord("a") + c) for c in range(n_classes)]
    words = [f"{n}{i:02d}" for n in names for i in range(per_class)]
    tok = tiny_tokenizer(words, n_vocab=len(words) + 2)
    ids = {n: [tok.convert_tokens_to_ids(f"{n}{i:02d}") for i in range(per_class)] for n in names}
    g = torch.Generator().manual_seed(seed)
    successor = torch.arange(len(words) + 2)
    for members in ids.values():
        m = torch.tensor(members)
        successor[m] = m[torch.randperm(len(m), generator=g)]
    classes = {i: n for n, members in ids.items() for i in members}
    return tok, classes, successor


def train_planted_moe(
    n_classes: int = 4,
    per_class: int = 12,
    steps: int = 300,
    seed: int = 0,
    force: float = 20.0,
    batch: int = 32,
    length: int = 16,
) -> PlantedMoE:
    """Train a 2-layer Mixtral (``n_classes`` experts, top 2) with class ``c`` planted on expert
    ``(c + 1) % n_classes`` (not the identity, so a mix-up of indices shows)."""
    from transformers import MixtralConfig, MixtralForCausalLM

    from mechscope.models.hooked import HookedModel

    tok, classes, successor = _vocab(n_classes, per_class, seed)
    names = sorted(set(classes.values()))
    plan = {n: (c + 1) % n_classes for c, n in enumerate(names)}
    expert_of = torch.zeros(len(successor), dtype=torch.long)
    for i, n in classes.items():
        expert_of[i] = plan[n]
    torch.manual_seed(seed)
    cfg = MixtralConfig(vocab_size=len(successor), hidden_size=32, intermediate_size=64,
                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                        head_dim=8, max_position_embeddings=64, num_local_experts=n_classes,
                        num_experts_per_tok=2, tie_word_embeddings=False)  # fmt: skip
    model = HookedModel(MixtralForCausalLM(cfg), tok)
    opt = torch.optim.Adam(model.hf.parameters(), lr=1e-2)
    ids = torch.tensor(sorted(classes))
    g = torch.Generator().manual_seed(seed + 1)
    loss = torch.tensor(0.0)
    model.hf.train()
    for _ in range(steps):
        x = chain_batch(successor, ids[torch.randint(len(ids), (batch,), generator=g)], length)
        target = expert_of[x].reshape(-1)
        aux: list[Tensor] = []

        def forced(logits: Tensor, hook: Any, target: Tensor = target, aux: list = aux) -> Tensor:
            aux.append(F.cross_entropy(logits.flatten(0, 1).float(), target))
            return logits + force * F.one_hot(target, n_classes).view(logits.shape)

        with model.hooks([(f"blocks.{L}.mlp.hook_router_logits", forced) for L in range(2)]):
            logits = model(x)
        lm = F.cross_entropy(logits[:, :-1].flatten(0, 1), x[:, 1:].reshape(-1))
        opt.zero_grad()
        (lm + sum(aux)).backward()
        opt.step()
        loss = lm.detach()
    model.hf.eval()
    return PlantedMoE(model, classes, names, plan, successor, float(loss))
