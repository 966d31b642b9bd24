"""Training a tuned lens on corpus windows (Belrose et al. 2023, section 3).

Steps, per batch of windows from :func:`mechscope.corpus.batches` (train split):

1. one forward of the frozen model caches the residual stream of every layer and the final
   log-probabilities (no gradient); ``sample`` positions of the batch are drawn at random (the
   unembedding of every layer, forward and backward, costs far more than the forward, so reading
   more windows and fewer positions of each gives more varied data for the same time);
2. for each layer, a chunk of positions at a time, the translated residual goes through the
   model's own final norm and unembedding, and the loss is KL(final || lens) averaged over
   positions (computed as soft-target cross-entropy minus the final entropy); its gradient
   reaches only that layer's translator, since the model's weights are frozen and the residuals
   detached;
3. one optimizer step for all layers: Adam (the paper's SGD with Nesterov momentum is
   ``optimizer="sgd"``) with a linear warmup and a linear decay to zero over the budget.

The unembedding runs in bfloat16 during training by default (``train_dtype``), which is several
times faster on CPUs; evaluation (:mod:`mechscope.lenses.evaluate`) is float32. With ``out``,
training checkpoints the lens and the optimizer to ``<out>.partial`` every ``checkpoint_every``
steps (atomically) and resumes from it after a crash; the finished lens is written to ``out``.
The run holds a lock on ``out`` (``.<name>.lock`` beside it), so two runs never share a
checkpoint.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from mechscope.cache import stack
from mechscope.corpus import Corpus, batches, load_corpus
from mechscope.errors import MechscopeError
from mechscope.files import atomic_path, file_lock
from mechscope.lenses.logit_lens import check_site
from mechscope.lenses.tuned_lens import TunedLens
from mechscope.models.hooked import HookedModel
from mechscope.progress import progress as progress_bar

__all__ = ["TrainConfig", "train_tuned_lens"]

_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass(frozen=True)
class TrainConfig:
    """How a tuned lens is trained; ``tokens`` is the budget (corpus tokens read)."""

    tokens: int = 4096  # corpus tokens (train split) read in all
    seq_len: int = 128  # tokens per window
    batch_size: int = 2  # windows per optimizer step
    lr: float = 0.1  # peak step size, relative to each layer's residual (see _optimizer)
    optimizer: str = "adam"  # "adam" or "sgd" (Nesterov momentum 0.9, as in the paper)
    weight_decay: float = 0.0
    warmup: float = 0.1  # share of the steps with a linear warmup
    site: str = "resid_post"  # the residual site the lens reads
    seed: int = 0  # order of the corpus windows
    train_dtype: str = "bfloat16"  # dtype of the unembedding in training: bfloat16 or float32
    sample: int = 64  # positions of each batch drawn at random for the loss; 0: all of them
    chunk: int = 256  # positions unembedded at once (bounds memory: chunk x d_vocab floats)
    checkpoint_every: int = 20  # steps between checkpoints when training to a file

    def __post_init__(self) -> None:
        if min(self.tokens, self.seq_len - 1, self.batch_size, self.chunk, self.sample + 1) < 1:
            raise MechscopeError(
                "tokens, batch_size and chunk must be >= 1, seq_len >= 2 and sample >= 0"
            )
        if self.optimizer not in ("adam", "sgd"):
            raise MechscopeError(f"optimizer must be 'adam' or 'sgd', not {self.optimizer!r}")
        if self.train_dtype not in _DTYPES:
            raise MechscopeError(f"train_dtype must be one of {', '.join(_DTYPES)}")
        if not (self.lr > 0 and 0 <= self.warmup < 1 and self.weight_decay >= 0):
            raise MechscopeError("lr must be > 0, warmup in [0, 1) and weight_decay >= 0")

    @property
    def steps(self) -> int:
        return -(-self.tokens // (self.seq_len * self.batch_size))


@contextlib.contextmanager
def frozen(model: HookedModel) -> Iterator[None]:
    """No gradient for the model's own weights (gradients still flow through them)."""
    params = [p for p in model.hf.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def residual_scales(model: HookedModel, tokens: Tensor, site: str) -> Tensor:
    """[layer] the median over positions of the residual's root-mean-square, per layer."""
    pattern = check_site(model, site)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names=pattern)
        rms = stack(cache, pattern).flatten(1, 2).pow(2).mean(-1).sqrt()  # [layer n]
    return rms.median(dim=1).values


def _optimizer(lens: TunedLens, cfg: TrainConfig, scales: Tensor) -> torch.optim.Optimizer:
    """Per layer: ``A_l`` steps by ``lr / d_model``; ``b_l`` by ``lr`` times the residual's scale.

    Either way one step moves the translated residual by about ``lr`` of its own size, whatever
    the layer's norm, so early (small) and late (large) residuals train at the same pace.
    """
    groups = []
    for layer in lens.trained_layers():
        groups.append({"params": [lens.weights[layer]], "lr": cfg.lr / lens.d_model})
        groups.append({"params": [lens.biases[layer]], "lr": cfg.lr * float(scales[layer])})
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)


def _lr_factor(step: int, cfg: TrainConfig) -> float:
    warm = max(1, round(cfg.warmup * cfg.steps))
    if step < warm:
        return (step + 1) / warm
    return max(0.0, (cfg.steps - step) / max(1, cfg.steps - warm))


def lens_step(
    model: HookedModel, lens: TunedLens, tokens: Tensor, cfg: TrainConfig, step: int = 0
) -> Tensor:
    """Accumulate the gradient of one batch into ``lens``; return the KL per layer [layer]."""
    pattern = check_site(model, cfg.site)
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens, names=pattern)
        resid = stack(cache, pattern).flatten(1, 2)  # [layer n d_model], n = batch * pos
        logits = logits.flatten(0, 1)
        if 0 < cfg.sample < logits.shape[0]:
            g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
            keep = torch.randperm(logits.shape[0], generator=g)[: cfg.sample]
            resid, logits = resid[:, keep], logits[keep]
        final = logits.float().log_softmax(-1)  # [n d_vocab]
        target = final.exp()
        entropy = -(target * final).sum(-1)  # [n]
    del cache, logits
    n = resid.shape[1]
    kl = torch.zeros(resid.shape[0])
    dtype = _DTYPES[cfg.train_dtype]
    # enable_grad: callers such as the report run under no_grad
    with frozen(model), model.capture_inputs() as inputs, torch.enable_grad():
        for layer in lens.trained_layers():
            for a in range(0, n, cfg.chunk):
                h = lens.translate(resid[layer, None, a : a + cfg.chunk], [layer])
                with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
                    lens_logits = model.run_from(h, model.dims.n_layers, inputs)[0]
                ce = F.cross_entropy(
                    lens_logits.float(), target[a : a + cfg.chunk], reduction="sum"
                )
                loss = (ce - entropy[a : a + cfg.chunk].sum()) / n
                loss.backward()
                kl[layer] += loss.detach()
    return kl


def _checkpoint(path: Path, lens: TunedLens, opt: torch.optim.Optimizer, step: int) -> None:
    """Lens, optimizer state and step in one safetensors file, written atomically."""
    tensors = {"lens.weight": lens.weight.detach(), "lens.bias": lens.bias.detach()}
    for i, param_state in opt.state_dict()["state"].items():
        for key, value in param_state.items():
            tensors[f"opt.{i}.{key}"] = torch.as_tensor(value).detach().clone()
    with atomic_path(path) as tmp:  # a unique temporary name per writer
        meta = {"config": json.dumps(lens.config), "step": str(step)}
        save_file(tensors, str(tmp), metadata=meta)


def _resume(path: Path, lens: TunedLens, opt: torch.optim.Optimizer) -> int:
    """Load a checkpoint of the same run into ``lens`` and ``opt``; return its step (0: none)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError):
        return 0
    if json.loads(meta.get("config", "null")) != lens.config:
        return 0  # another run's checkpoint (other model, corpus or settings): start afresh
    lens.set_(tensors["lens.weight"], tensors["lens.bias"])
    state = opt.state_dict()
    for name, value in tensors.items():
        if name.startswith("opt."):
            _, i, key = name.split(".", 2)
            state["state"].setdefault(int(i), {})[key] = value
    opt.load_state_dict(state)
    return int(meta["step"])


def train_tuned_lens(
    model: HookedModel,
    corpus: Corpus | str | None = None,
    config: TrainConfig | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    quiet: bool = False,
    reuse: bool = False,
) -> TunedLens:
    """Train a tuned lens for ``model`` on ``corpus`` (None: the built-in one), train split.

    With ``out`` the lens is saved there; training checkpoints to ``<out>.partial`` and, run
    again with the same settings after a crash, resumes from it. The run holds ``out``'s lock
    (:func:`mechscope.files.file_lock`): a second run into the same file raises
    :class:`~mechscope.errors.FolderInUseError` naming the first. ``reuse=True`` loads a lens
    already at ``out`` once the lock is held (one another run published meanwhile) instead of
    training it again.
    """
    cfg = config or TrainConfig()
    corpus = corpus if isinstance(corpus, Corpus) else load_corpus(corpus)
    if out is None:
        return _train(model, corpus, cfg, None, quiet)
    with file_lock(out, "tuned lens training"):  # one run per output file and its .partial
        if reuse and Path(out).is_file():
            return TunedLens.load(out, model)
        partial = Path(f"{out}.partial")
        lens = _train(model, corpus, cfg, partial, quiet)
        lens.save(out)
        partial.unlink(missing_ok=True)
    return lens


def _train(
    model: HookedModel, corpus: Corpus, cfg: TrainConfig, partial: Path | None, quiet: bool
) -> TunedLens:
    """The training loop; checkpoints to (and resumes from) ``partial`` when given."""
    lens = TunedLens.identity(model, cfg.site)
    lens.config.update(corpus=corpus.name, corpus_fingerprint=corpus.fingerprint, train=asdict(cfg))
    data = batches(
        corpus,
        model.tokenizer,
        batch_size=cfg.batch_size,
        seq_len=cfg.seq_len,
        n_tokens=cfg.tokens,
        seed=cfg.seed,
        split="train",
    )
    first = next(data)
    opt = _optimizer(lens, cfg, residual_scales(model, first, cfg.site))
    base_lr = [group["lr"] for group in opt.param_groups]
    start = _resume(partial, lens, opt) if partial is not None else 0
    bar = progress_bar(
        itertools.chain([first], data), total=cfg.steps, desc="tuned lens", quiet=quiet, unit="step"
    )
    tokens_seen = 0
    for step, tokens in enumerate(bar):
        tokens_seen += tokens.numel()
        if step < start:
            continue  # trained before the crash: the windows come in the same order
        opt.zero_grad(set_to_none=True)
        kl = lens_step(model, lens, tokens, cfg, step)
        for group, lr in zip(opt.param_groups, base_lr, strict=True):
            group["lr"] = lr * _lr_factor(step, cfg)
        opt.step()
        bar.set_postfix_str(f"mean KL {kl.mean():.3f}")
        if partial is not None and (step + 1) % cfg.checkpoint_every == 0:
            _checkpoint(partial, lens, opt, step + 1)
    lens.config["tokens_trained"] = tokens_seen
    return lens
