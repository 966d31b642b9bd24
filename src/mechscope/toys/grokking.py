"""The modular-addition toy that groks (Nanda et al. 2023, "Progress measures for grokking via
mechanistic interpretability"), trained on CPU with checkpoints.

The model reads ``a b =`` (tokens ``a, b`` in ``[0, p)`` and ``=`` = ``p``) and predicts
``(a + b) mod p`` at the last position: token and position embeddings, one attention layer
(``n_heads`` heads, no LayerNorm, as in the paper), a ReLU MLP and an unembedding. Steps:

1. data: every pair ``(a, b)``; a seeded ``train_fraction`` of them is the training set, the rest
   the test set;
2. training: full-batch AdamW (``lr`` 1e-3, weight decay 1, betas 0.9/0.98), cross-entropy on the
   last position, with a linear warm-up over the first 10 epochs;
3. every ``checkpoint_every`` epochs the weights go to ``OUT/checkpoints/epoch-<N>.safetensors``
   (read by :mod:`mechscope.compare.progress_measures`) and the optimiser, the epoch and the loss
   curve to ``OUT/state.safetensors`` + ``OUT/state.json``, each written atomically; a rerun
   resumes from the state after a crash (kill -9 included) and gives the same weights as a run
   that never stopped (full batch: no data order to restore); a rerun with more ``epochs`` and
   otherwise the same settings extends a finished run.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from mechscope.errors import MechscopeError
from mechscope.files import atomic_path, folder_lock, write_atomic
from mechscope.progress import progress

__all__ = ["GrokConfig", "ModAddModel", "dataset", "load_checkpoint", "train_grokking"]


@dataclass(frozen=True)
class GrokConfig:
    """The toy and its training (the paper's values but ``p`` and ``epochs`` by default)."""

    p: int = 113
    d_model: int = 128
    n_heads: int = 4
    d_mlp: int = 512
    train_fraction: float = 0.3
    epochs: int = 20_000
    lr: float = 1e-3
    weight_decay: float = 1.0
    seed: int = 0
    checkpoint_every: int = 100

    def __post_init__(self) -> None:
        if self.p < 3 or self.d_model % self.n_heads or min(self.epochs, self.checkpoint_every) < 1:
            raise MechscopeError(
                f"need p >= 3, d_model divisible by n_heads and positive epochs, got {self}"
            )
        if not 0 < self.train_fraction < 1:
            raise MechscopeError(f"train_fraction must lie in (0, 1), got {self.train_fraction}")


class ModAddModel(nn.Module):
    """One attention layer and one ReLU MLP, no LayerNorm; logits at the last position."""

    def __init__(self, cfg: GrokConfig) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(cfg.seed)
        d, h = cfg.d_model, cfg.n_heads

        def w(*shape: int, fan_in: int) -> nn.Parameter:
            return nn.Parameter(torch.randn(*shape, generator=gen) / math.sqrt(fan_in))

        self.n_heads = h
        self.W_E = w(cfg.p + 1, d, fan_in=d)  # [vocab d_model]
        self.W_pos = w(3, d, fan_in=d)
        self.W_QKV = w(3, d, d, fan_in=d)
        self.W_O = w(d, d, fan_in=d)
        self.W_in = w(d, cfg.d_mlp, fan_in=d)
        self.b_in = nn.Parameter(torch.zeros(cfg.d_mlp))
        self.W_out = w(cfg.d_mlp, d, fan_in=cfg.d_mlp)
        self.b_out = nn.Parameter(torch.zeros(d))
        self.W_U = w(d, cfg.p, fan_in=d)

    def forward(self, tokens: Tensor) -> Tensor:
        """``tokens [batch 3]`` -> logits ``[batch p]`` at the ``=`` position."""
        x = self.W_E[tokens] + self.W_pos  # [batch 3 d]
        b, n, d = x.shape
        q, k, v = (
            (x @ self.W_QKV[i]).view(b, n, self.n_heads, -1).transpose(1, 2) for i in range(3)
        )
        mask = torch.ones(n, n, dtype=torch.bool).tril()
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
        pattern = scores.masked_fill(~mask, float("-inf")).softmax(-1)
        z = (pattern @ v).transpose(1, 2).reshape(b, n, d)
        x = x + z @ self.W_O
        x = x + (x @ self.W_in + self.b_in).relu() @ self.W_out + self.b_out
        return x[:, -1] @ self.W_U


def dataset(cfg: GrokConfig) -> tuple[Tensor, Tensor, Tensor]:
    """``tokens [p*p 3]`` (row ``a * p + b``), labels ``[p*p]`` and the training mask."""
    a, b = torch.meshgrid(torch.arange(cfg.p), torch.arange(cfg.p), indexing="ij")
    a, b = a.reshape(-1), b.reshape(-1)
    tokens = torch.stack([a, b, torch.full_like(a, cfg.p)], dim=1)
    labels = (a + b) % cfg.p
    gen = torch.Generator().manual_seed(cfg.seed)
    order = torch.randperm(cfg.p * cfg.p, generator=gen)
    train = torch.zeros(cfg.p * cfg.p, dtype=torch.bool)
    train[order[: int(cfg.train_fraction * cfg.p * cfg.p)]] = True
    return tokens, labels, train


def _opt(model: ModAddModel, cfg: GrokConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98)
    )


def _save_state(
    out: Path, model: nn.Module, opt: torch.optim.Optimizer, meta: dict[str, Any]
) -> None:
    tensors = {f"model.{k}": v.detach().clone() for k, v in model.state_dict().items()}
    for i, per in opt.state_dict()["state"].items():
        tensors.update({f"opt.{i}.{k}": torch.as_tensor(v).clone() for k, v in per.items()})
    with atomic_path(out / "state.safetensors") as tmp:
        save_file(tensors, tmp)
    write_atomic(out / "state.json", json.dumps(meta))  # after the tensors: it names their epoch


def _load_state(out: Path, model: nn.Module, opt: torch.optim.Optimizer, cfg: GrokConfig) -> dict:
    meta = json.loads((out / "state.json").read_text(encoding="utf-8"))
    saved, wanted = dict(meta.get("config", {})), asdict(cfg)
    saved.pop("epochs", None)
    wanted.pop("epochs")  # more epochs extend a run: the schedule is constant after warm-up
    if saved != wanted:
        raise MechscopeError(
            f"{out} holds a run with other settings; use another folder or the same settings"
        )
    tensors = load_file(out / "state.safetensors")
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("opt."):
            i, key = name[4:].split(".", 1)
            state.setdefault(int(i), {})[key] = value
    opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})
    return meta


def train_grokking(
    out: str | Path, cfg: GrokConfig = GrokConfig(), *, quiet: bool = False
) -> dict[str, Any]:
    """Train (or resume) the toy into ``out``; returns ``state.json``'s content."""
    folder = Path(out)
    (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
    model = ModAddModel(cfg)
    opt = _opt(model, cfg)
    tokens, labels, train = dataset(cfg)
    meta: dict[str, Any] = {"config": asdict(cfg), "epoch": 0, "history": []}
    with folder_lock(folder, "grokking training"):
        if (folder / "state.json").is_file():
            meta = {**_load_state(folder, model, opt, cfg), "config": asdict(cfg)}
        bar = progress(range(meta["epoch"], cfg.epochs), desc="grokking", quiet=quiet)
        for epoch in bar:
            for group in opt.param_groups:
                group["lr"] = cfg.lr * min(1.0, (epoch + 1) / 10)
            loss = nn.functional.cross_entropy(model(tokens[train]), labels[train])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if (epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == cfg.epochs:
                meta["epoch"] = epoch + 1
                meta["history"].append(_evaluate(model, tokens, labels, train, epoch + 1))
                path = folder / "checkpoints" / f"epoch-{epoch + 1:06d}.safetensors"
                with atomic_path(path) as tmp:
                    save_file({k: v.detach().clone() for k, v in model.state_dict().items()}, tmp)
                _save_state(folder, model, opt, meta)
                bar.set_postfix_str(f"train {meta['history'][-1]['train_loss']:.3g}")
    return meta


@torch.no_grad()
def _evaluate(model: nn.Module, tokens: Tensor, labels: Tensor, train: Tensor, epoch: int) -> dict:
    logits = model(tokens)
    losses = nn.functional.cross_entropy(logits, labels, reduction="none")
    right = logits.argmax(-1) == labels
    return {
        "epoch": epoch,
        "train_loss": float(losses[train].mean()),
        "test_loss": float(losses[~train].mean()),
        "train_acc": float(right[train].float().mean()),
        "test_acc": float(right[~train].float().mean()),
    }


def load_checkpoint(path: str | Path, cfg: GrokConfig) -> ModAddModel:
    """A model with the weights of one checkpoint file."""
    model = ModAddModel(cfg)
    model.load_state_dict(load_file(Path(path)))
    return model.eval()
