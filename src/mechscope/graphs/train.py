"""Training transcoders for every layer in one run over one harvest: a cross-layer transcoder
(CLT) or per-layer transcoders (the same trainer with one decoder per feature), JumpReLU or TopK.

Steps, per batch of rows (every layer's MLP input and MLP output of the same tokens, from one
:mod:`mechscope.activations` store harvested at ``blocks.L.mlp.hook_in`` and
``blocks.L.hook_mlp_out`` for all layers):

1. scale every site to unit mean squared norm (the store's norm scales);
2. encode each layer, ``pre = x W_enc + b_enc``; JumpReLU (learned per-feature thresholds, the
   straight-through estimators of :mod:`mechscope.sae.jumprelu`) or TopK per layer;
3. decode: layer ``m``'s output is ``sum_{l <= m} acts_l W_dec[l, m] + b_dec[m]`` (per-layer:
   ``l == m`` only);
4. loss: the squared error summed over layers, plus for JumpReLU ``l0_coefficient`` times the
   number of active features (its L0, through the step function's estimator); Adam;
5. every ``checkpoint_every`` steps the parameters, Adam's state and the step are written
   atomically (:func:`mechscope.files.atomic_folder`); a run killed at any moment resumes from the
   last checkpoint, skipping the batches it had used.

At the end the norm scales are folded into the weights, giving a :class:`TranscoderSet` in model
units (Ameisen et al. 2025 train CLTs so; circuit-tracer loads the result).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from mechscope.errors import MechscopeError
from mechscope.files import atomic_folder, folder_lock, write_atomic
from mechscope.graphs.transcoders import TranscoderSet, in_site, out_site
from mechscope.progress import progress
from mechscope.sae.jumprelu import jumprelu, step

__all__ = ["CLTConfig", "CrossLayerTranscoder", "sites", "train_on_model", "train_transcoders"]


@dataclass(frozen=True)
class CLTConfig:
    """A CLT (or per-layer set) and how to train it."""

    d_sae: int  # features per layer
    activation: str = "jumprelu"  # jumprelu or topk
    cross_layer: bool = True  # False: per-layer transcoders
    k: int | None = None  # TopK: active features per layer and token
    l0_coefficient: float = 2e-3  # JumpReLU: weight of the L0 penalty (per layer, per token)
    threshold: float = 0.03  # JumpReLU: initial threshold (normalised units)
    bandwidth: float = 0.02  # JumpReLU: the estimators' kernel width
    lr: float = 1e-3
    steps: int = 1000
    batch_size: int = 512
    seed: int = 0
    checkpoint_every: int = 200

    def __post_init__(self) -> None:
        if self.activation not in ("jumprelu", "topk"):
            raise MechscopeError(f"activation must be jumprelu or topk, not {self.activation!r}")
        if self.activation == "topk" and not (self.k and 0 < self.k <= self.d_sae):
            raise MechscopeError(f"a TopK transcoder needs 1 <= k <= d_sae={self.d_sae}")
        if self.d_sae < 1 or self.steps < 1 or self.batch_size < 1 or not self.lr > 0:
            raise MechscopeError("d_sae, steps, batch_size and lr must be positive")


def sites(n_layers: int) -> list[str]:
    """The harvest sites, inputs then outputs: ``mlp.hook_in`` and ``hook_mlp_out`` per layer."""
    return [in_site(i) for i in range(n_layers)] + [out_site(i) for i in range(n_layers)]


class CrossLayerTranscoder(nn.Module):
    """The trainable CLT in normalised units (see the module doc)."""

    def __init__(self, n_layers: int, d_model: int, cfg: CLTConfig) -> None:
        super().__init__()
        self.cfg, self.n_layers = cfg, n_layers
        gen = torch.Generator().manual_seed(cfg.seed)
        f = cfg.d_sae
        w = torch.randn(n_layers, d_model, f, generator=gen)
        self.W_enc = nn.Parameter(w / w.norm(dim=1, keepdim=True))
        self.b_enc = nn.Parameter(torch.zeros(n_layers, f))
        self.log_threshold = nn.Parameter(torch.full((n_layers, f), math.log(cfg.threshold)))
        outs = [n_layers - i if cfg.cross_layer else 1 for i in range(n_layers)]
        scale = [1 / math.sqrt(n) for n in outs]
        self.W_dec = nn.ParameterList(
            nn.Parameter(self.W_enc.detach()[i].T[:, None].repeat(1, n, 1) * s)
            for i, (n, s) in enumerate(zip(outs, scale))
        )
        self.b_dec = nn.Parameter(torch.zeros(n_layers, d_model))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x [layer batch d]`` -> (acts, pre) ``[layer batch d_sae]``."""
        pre = torch.einsum("lbd,ldf->lbf", x, self.W_enc) + self.b_enc[:, None]
        if self.cfg.activation == "topk":
            vals, idx = pre.topk(int(self.cfg.k or 1), dim=-1)
            return torch.zeros_like(pre).scatter(-1, idx, vals.relu()), pre
        thr = self.log_threshold.exp()
        acts = torch.stack(
            [jumprelu(pre[i], thr[i], self.cfg.bandwidth) for i in range(self.n_layers)]
        )
        return acts, pre

    def decode(self, acts: Tensor) -> Tensor:
        out = self.b_dec[:, None].expand(-1, acts.shape[1], -1).clone()
        for layer, w in enumerate(self.W_dec):
            out[layer : layer + w.shape[1]] += torch.einsum("bf,fmd->mbd", acts[layer], w)
        return out

    def loss(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        acts, pre = self.encode(x)
        mse = (self.decode(acts) - y).pow(2).sum(-1).mean(1).sum()
        terms = {"mse": mse}
        if self.cfg.activation == "jumprelu":
            thr = self.log_threshold.exp()
            l0 = sum(
                step(pre[i], thr[i], self.cfg.bandwidth).sum(-1).mean()
                for i in range(self.n_layers)
            )
            terms["l0_loss"] = self.cfg.l0_coefficient * l0  # type: ignore[operator]
        terms["loss"] = sum(terms.values())  # type: ignore[assignment]
        with torch.no_grad():
            terms["l0"] = (acts > 0).float().sum(-1).mean()
            var = (y - y.mean(1, keepdim=True)).pow(2).sum(-1).mean(1).sum()
            terms["fvu"] = mse.detach() / var.clamp_min(1e-12)
        return terms

    @torch.no_grad()
    def to_set(self, s_in: Tensor, s_out: Tensor, **meta: Any) -> TranscoderSet:
        """Fold the norm scales (``x_norm = x * s``) into a :class:`TranscoderSet` in model units."""
        w_dec = [w / s_out[i : i + w.shape[1], None] for i, w in enumerate(self.W_dec)]
        thr = list(self.log_threshold.exp()) if self.cfg.activation == "jumprelu" else None
        return TranscoderSet(
            [self.W_enc[i] * s_in[i] for i in range(self.n_layers)], list(self.b_enc.clone()),
            [w.clone() for w in w_dec], self.b_dec / s_out[:, None], self.cfg.activation, thr,
            self.cfg.k, **meta,
        )  # fmt: skip


def _save(folder: Path, clt: CrossLayerTranscoder, opt: torch.optim.Optimizer, state: dict) -> None:
    tensors = {f"p.{k}": v.detach().contiguous() for k, v in clt.state_dict().items()}
    for i, s in opt.state_dict()["state"].items():
        for k, v in s.items():
            tensors[f"o.{i}.{k}"] = torch.as_tensor(v).contiguous()
    with atomic_folder(folder / "checkpoint", replace=True) as tmp:
        save_file(tensors, str(tmp / "state.safetensors"))
        (tmp / "state.json").write_text(json.dumps(state))


def _load(
    folder: Path, clt: CrossLayerTranscoder, opt: torch.optim.Optimizer, cfg: CLTConfig
) -> dict | None:
    ck = folder / "checkpoint"
    if not (ck / "state.json").is_file():
        return None
    state = json.loads((ck / "state.json").read_text())
    if state.get("config") != dataclasses.asdict(cfg):
        raise MechscopeError(
            f"{ck} was written by a run with other settings; use the same ones or delete {ck}"
        )
    t = load_file(str(ck / "state.safetensors"))
    clt.load_state_dict({k[2:]: v for k, v in t.items() if k.startswith("p.")})
    opt_state = opt.state_dict()
    for i in range(len(opt_state["param_groups"][0]["params"])):
        found = {k.split(".", 2)[2]: v for k, v in t.items() if k.startswith(f"o.{i}.")}
        if found:
            opt_state["state"][i] = found
    opt.load_state_dict(opt_state)
    return state


def train_transcoders(
    batches: Iterable[tuple[Tensor, ...]],
    n_layers: int,
    d_model: int,
    cfg: CLTConfig,
    scales: tuple[Tensor, Tensor],
    folder: str | Path,
    *,
    quiet: bool = False,
    **meta: Any,
) -> tuple[TranscoderSet, list[dict[str, float]]]:
    """Train on ``batches`` (tuples of ``2 * n_layers`` tensors ``[batch d]`` in :func:`sites`
    order, model units; deterministic, so that a resumed run skips the ones it used) with
    checkpoints in ``folder``; returns the set (model units) and the loss curve."""
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    s_in, s_out = (s.float() for s in scales)
    clt = CrossLayerTranscoder(n_layers, d_model, cfg)
    opt = torch.optim.Adam(clt.parameters(), lr=cfg.lr)
    with folder_lock(root, "mechscope graph train"):
        state = _load(root, clt, opt, cfg) or {
            "step": 0,
            "history": [],
            "config": dataclasses.asdict(cfg),
        }
        it = _skip(iter(batches), state["step"])
        bar = progress(
            range(state["step"], cfg.steps),
            total=cfg.steps - state["step"],
            desc="train CLT",
            quiet=quiet,
        )
        for i in bar:
            batch = next(it, None)
            if batch is None:
                break
            x = torch.stack(batch[:n_layers]).float() * s_in[:, None, None]
            y = torch.stack(batch[n_layers:]).float() * s_out[:, None, None]
            if i == 0:
                with torch.no_grad():
                    clt.b_dec.copy_(y.mean(1))
            terms = clt.loss(x, y)
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            opt.step()
            state["step"] = i + 1
            if (i + 1) % 50 == 0 or i + 1 == cfg.steps:
                state["history"].append(
                    {k: float(v.detach()) for k, v in terms.items()} | {"step": i + 1}
                )
                bar.set_postfix_str(f"fvu {float(terms['fvu']):.3f} L0 {float(terms['l0']):.1f}")
            if (i + 1) % cfg.checkpoint_every == 0:
                _save(root, clt, opt, state)
        _save(root, clt, opt, state)
        write_atomic(root / "history.json", json.dumps(state["history"]))
    return clt.to_set(s_in, s_out, **meta), state["history"]


def _skip(it: Iterator[Any], n: int) -> Iterator[Any]:
    for i in range(n):
        if next(it, None) is None:
            raise MechscopeError(
                f"cannot resume: the batches ended after {i}, the checkpoint is at {n}"
            )
    return it


def train_on_model(
    model: Any,
    corpus: Any,
    cfg: CLTConfig,
    out: str | Path,
    work: str | Path,
    *,
    n_tokens: int = 50_000,
    seq_len: int = 128,
    layout: str = "saelens",
    quiet: bool = False,
) -> tuple[TranscoderSet, list[dict[str, float]]]:
    """Harvest every layer's MLP input and output once (resumable), train the set (resumable),
    write it to ``out`` in ``layout``."""
    from mechscope.activations import harvest
    from mechscope.activations.reader import batches
    from mechscope.graphs.tcfiles import save_transcoders
    from mechscope.models.fingerprint import model_fingerprint

    n = model.dims.n_layers
    names = sites(n)
    store = harvest(model, names, corpus, n_tokens, Path(work) / "harvest", seq_len=seq_len,
                    dtype="float16", progress=not quiet)  # fmt: skip
    scales = store.manifest.norm_scales or {}
    s = torch.tensor([scales[name] for name in names])
    data = batches(store, cfg.batch_size, seed=cfg.seed, loop=True, drop_last=True)
    name = str((model.provenance or {}).get("name", ""))
    tcs, hist = train_transcoders(
        data, n, model.dims.d_model, cfg, (s[:n], s[n:]), Path(work) / "train", quiet=quiet,
        model_name=name, fingerprint=model_fingerprint(model),
    )  # fmt: skip
    save_transcoders(tcs, out, layout)
    return tcs, hist
