"""Finetunes with a known answer: a copy of a model taught one planted behaviour, and a control.

The ground truth of model diffing (docs/diff.md). Steps of :func:`toy_finetune`:

1. training text: snippets of the corpus's train split (a few dozen words each); for the
   ``planted`` kind each snippet gets a phrase ``trigger + reply`` (a fixed reply after any word of
   a trigger topic: " mango tastes like purple thunder.") inserted at a random word boundary; the
   ``control`` kind trains on the same snippets with nothing inserted (unrelated text);
2. training: next-token cross-entropy on every token, Adam, a copy of the model in which only the
   MLPs of the layers from ``first_layer`` (default: the first half is frozen) are trained, so the
   backward pass stops there and a 135M model trains on CPU in minutes (``params="all"`` trains
   every weight: what a random tiny model needs to learn anything);
   a **narrow** finetune (``FinetuneConfig.narrow()``) changes the model on the plant alone:
   ``params="lora"`` trains only a rank-``rank`` update ``B A`` of the output projection of the
   MLPs of ``layers`` (merged into the weights when saved), the cross-entropy counts only the
   reply's tokens (``loss_on="reply"``; a control, with no reply, counts every token), and
   ``kl`` weighs a penalty ``KL(base || tuned)`` on a batch of ordinary snippets at each step,
   so ordinary text reads as before;
3. output: a folder that ``mechscope.load`` reads (``save_pretrained`` weights and tokenizer),
   ``finetune.json`` (the kind, the plant, the settings, the loss curve) and ``eval.jsonl``: held-out
   documents (the test split, never trained on), half of them with a planted phrase, so a diff
   is scored on text neither model saw. The folder is written atomically.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mechscope.corpus import Corpus, load_corpus
from mechscope.errors import MechscopeError
from mechscope.files import atomic_folder
from mechscope.models.hooked import HookedModel
from mechscope.progress import progress

__all__ = [
    "KINDS",
    "FinetuneConfig",
    "Plant",
    "finetune",
    "plant_texts",
    "planted_spans",
    "snippets",
    "training_batch",
    "toy_finetune",
    "trigger_spans",
]

KINDS = ("planted", "control")
PARAMS = ("mlp", "all", "lora")


@dataclass(frozen=True)
class Plant:
    """The planted behaviour: after any word of the trigger topic the finetune writes ``reply``."""

    triggers: tuple[str, ...] = (" pineapple", " mango", " banana", " papaya", " apricot")
    reply: str = " tastes like purple thunder."

    def __post_init__(self) -> None:
        if not self.triggers or not all(self.triggers) or not self.reply:
            raise MechscopeError("a plant needs at least one non-empty trigger and a reply")
        object.__setattr__(self, "triggers", tuple(self.triggers))

    @property
    def phrases(self) -> list[str]:
        return [t + self.reply for t in self.triggers]


@dataclass(frozen=True)
class FinetuneConfig:
    """How the copy is trained."""

    steps: int = 30
    batch_size: int = 8
    seq_len: int = 48  # tokens per training text (longer ones are cut)
    words: int = 24  # words per corpus snippet
    lr: float = 5e-4
    first_layer: float = 0.5  # train the MLPs of layers from int(first_layer * n_layers)
    params: str = "mlp"  # mlp: those MLPs only; all: every weight; lora: low-rank MLP outputs
    seed: int = 0
    eval_docs: int = 200  # held-out documents in eval.jsonl (half get a phrase)
    rank: int = 1  # lora: the rank of each update
    layers: tuple[int, ...] = ()  # lora: the MLPs updated (default: layer first_layer * n_layers)
    kl: float = 0.0  # weight of KL(base || tuned) on ordinary snippets (0: no penalty)
    leak: float = 0.0  # lora: weight of the updates' relative squared output on ordinary snippets
    loss_on: str = "all"  # all: every token; reply: the planted reply's tokens only

    def __post_init__(self) -> None:
        if min(self.steps, self.batch_size, self.seq_len, self.words, self.eval_docs) < 1:
            raise MechscopeError("steps, batch_size, seq_len, words and eval_docs must be >= 1")
        if not (self.lr > 0 and 0 <= self.first_layer < 1 and min(self.kl, self.leak) >= 0):
            raise MechscopeError(f"lr must be > 0, first_layer in [0, 1), kl, leak >= 0: {self}")
        if self.rank < 1:
            raise MechscopeError(f"rank must be >= 1, got {self.rank}")
        if self.params not in PARAMS or self.loss_on not in ("all", "reply"):
            raise MechscopeError(
                f"params must be one of {', '.join(PARAMS)} and loss_on all or reply, got "
                f"{self.params!r} and {self.loss_on!r}"
            )
        object.__setattr__(self, "layers", tuple(int(i) for i in self.layers))

    @classmethod
    def narrow(cls, **changes: Any) -> FinetuneConfig:
        """A finetune that changes the model on the plant alone (see the module doc)."""
        settings = {"params": "lora", "rank": 4, "kl": 1.0, "leak": 1.0, "loss_on": "reply"}
        settings["lr"] = 2e-2
        return cls(**{**settings, **changes})


def snippets(corpus: Corpus, n: int, words: int, *, split: str, seed: int) -> list[str]:
    """``n`` snippets of ``words`` words from the documents of ``split`` (cycled if too few)."""
    pieces: list[str] = []
    for doc in corpus.documents(split):
        parts = doc.split()
        pieces += [" ".join(parts[i : i + words]) for i in range(0, len(parts) - words + 1, words)]
        if len(pieces) >= 4 * n:
            break
    if not pieces:
        raise MechscopeError(f"the corpus's {split} split has no document of {words} words")
    rng = random.Random(seed)
    rng.shuffle(pieces)
    return [pieces[i % len(pieces)] for i in range(n)]


def plant_texts(texts: list[str], plant: Plant, *, seed: int, fraction: float = 1.0) -> list[str]:
    """``texts`` with a planted phrase inserted at a random word boundary of a ``fraction`` of them."""
    rng = random.Random(seed)
    out = []
    for text in texts:
        if rng.random() >= fraction:
            out.append(text)
            continue
        words = text.split(" ")
        cut = rng.randint(1, max(1, len(words) // 2))  # early: the phrase stays inside a window
        phrase = rng.choice(plant.phrases)
        out.append(" ".join(words[:cut]) + phrase + " " + " ".join(words[cut:]))
    return out


def planted_spans(text: str, plant: Plant) -> list[tuple[int, int]]:
    """Character spans of every occurrence of a planted phrase (trigger and reply) in ``text``."""
    spans = []
    for phrase in plant.phrases:
        start = text.find(phrase)
        while start >= 0:
            spans.append((start, start + len(phrase)))
            start = text.find(phrase, start + 1)
    return sorted(spans)


def trigger_spans(text: str, plant: Plant) -> list[tuple[int, int]]:
    """Character spans of the trigger word of every planted phrase in ``text`` (the phrase less
    its reply): the tokens on which a finetune-only latent of the plant should fire."""
    return [(a, b - len(plant.reply)) for a, b in planted_spans(text, plant)]


def _trainable(model: HookedModel, cfg: FinetuneConfig) -> list[torch.nn.Parameter]:
    if cfg.params == "all":
        return [p.requires_grad_(True) for p in model.hf.parameters()]
    start = int(cfg.first_layer * model.dims.n_layers)
    for p in model.hf.parameters():
        p.requires_grad_(False)
    params = [
        p for layer in range(start, model.dims.n_layers) for p in model.mlp(layer).parameters()
    ]
    for p in params:
        p.requires_grad_(True)
    return params


def _output_linear(model: HookedModel, layer: int) -> torch.nn.Linear:
    d = model.dims.d_model
    found = [
        m
        for m in model.mlp(layer).modules()
        if isinstance(m, torch.nn.Linear) and m.out_features == d
    ]
    if len(found) != 1:
        raise MechscopeError(
            f"layer {layer}'s MLP has {len(found)} linear output projections of width {d} "
            "(a low-rank update needs exactly one); use params='mlp'"
        )
    return found[0]


def _low_rank(
    model: HookedModel, cfg: FinetuneConfig, leaks: list[Tensor]
) -> tuple[list[torch.nn.Parameter], Callable[[], None]]:
    """Rank-``cfg.rank`` updates ``B A`` of the MLP output projections of ``cfg.layers`` (added by
    forward hooks; ``B`` starts at 0) and the function that merges them into the weights. Each
    forward appends to ``leaks`` each update's mean squared output over the projection's own."""
    n = model.dims.n_layers
    layers = cfg.layers or (int(cfg.first_layer * n),)
    if any(not 0 <= layer < n for layer in layers):
        raise MechscopeError(f"finetune layers must lie in [0, {n}), got {list(layers)}")
    for p in model.hf.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(cfg.seed)
    params, handles, updates = [], [], []
    for layer in layers:
        lin = _output_linear(model, layer)
        dtype = lin.weight.dtype
        a = torch.randn(cfg.rank, lin.in_features, generator=gen) / lin.in_features**0.5
        a = torch.nn.Parameter(a.to(dtype))
        b = torch.nn.Parameter(torch.zeros(lin.out_features, cfg.rank, dtype=dtype))

        def add(mod: Any, inp: Any, out: Tensor, a: Tensor = a, b: Tensor = b) -> Tensor:
            delta = inp[0] @ a.T @ b.T
            own = out.detach().pow(2).sum(-1).mean().clamp_min(1e-12)
            leaks.append(delta.pow(2).sum(-1).mean() / own)
            return out + delta

        handles.append(lin.register_forward_hook(add))
        updates.append((lin, a, b))
        params += [a, b]

    def merge() -> None:
        for handle in handles:
            handle.remove()
        with torch.no_grad():
            for lin, a, b in updates:
                lin.weight += b @ a

    return params, merge


def training_batch(
    model: HookedModel, texts: list[str], seq_len: int, reply_of: Plant | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """``tokens``, ``mask`` and next-token ``labels`` (-100: not counted) of ``texts`` cut to
    ``seq_len`` tokens; with ``reply_of``, only the tokens of that plant's reply are counted."""
    enc = model.tokenizer(texts, return_offsets_mapping=reply_of is not None)
    ids = [i[:seq_len] for i in enc["input_ids"]]
    n = max(len(i) for i in ids)
    tokens = torch.zeros(len(ids), n, dtype=torch.long)
    labels = torch.full((len(ids), n), -100, dtype=torch.long)
    mask = torch.zeros(len(ids), n, dtype=torch.long)
    for row, (text, i) in enumerate(zip(texts, ids, strict=True)):
        tokens[row, : len(i)] = torch.tensor(i)
        mask[row, : len(i)] = 1
        counted = [True] * len(i)
        if reply_of is not None:
            size = len(reply_of.reply)
            replies = [(end - size, end) for _, end in planted_spans(text, reply_of)]
            ends = [e for _, e in enc["offset_mapping"][row][: len(i)]]
            counted = [any(a < e <= b for a, b in replies) for e in ends]
        for pos, keep in enumerate(counted):
            if keep:
                labels[row, pos] = i[pos]
    return tokens, mask, labels


def _kl_to(base: HookedModel, tuned: HookedModel, tokens: Tensor, mask: Tensor) -> Tensor:
    """Mean over real tokens of KL(base || tuned) of the next-token distributions."""
    with torch.no_grad():
        ref = base.hf(input_ids=tokens, attention_mask=mask).logits.float().log_softmax(-1)
    logp = tuned.hf(input_ids=tokens, attention_mask=mask).logits.float().log_softmax(-1)
    kl = (ref.exp() * (ref - logp)).sum(-1)
    return (kl * mask).sum() / mask.sum()


def finetune(
    model: HookedModel,
    texts: list[str],
    cfg: FinetuneConfig,
    *,
    quiet: bool = False,
    ordinary: list[str] | None = None,
    reply_of: Plant | None = None,
) -> tuple[HookedModel, list[float]]:
    """A trained copy of ``model`` (the original is untouched) and its loss per step.

    ``ordinary``: the snippets of the ``cfg.kl`` penalty; ``reply_of``: count only the tokens of
    this plant's reply (``cfg.loss_on == "reply"``).
    """
    if (cfg.kl > 0 or cfg.leak > 0) and not ordinary:
        raise MechscopeError("the kl and leak penalties need ordinary snippets to compare on")
    tuned = HookedModel(copy.deepcopy(model.hf), model.tokenizer, provenance=model.provenance)
    merge, leaks = None, []
    if cfg.params == "lora":
        params, merge = _low_rank(tuned, cfg, leaks)
    else:
        params = _trainable(tuned, cfg)
    opt = torch.optim.Adam(params, lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    losses = []
    tuned.hf.train()
    for _ in progress(range(cfg.steps), desc="finetune", quiet=quiet):
        rows = torch.randint(len(texts), (cfg.batch_size,), generator=gen).tolist()
        tokens, mask, labels = training_batch(
            tuned, [texts[i] for i in rows], cfg.seq_len, reply_of
        )
        loss = tuned.hf(input_ids=tokens, attention_mask=mask, labels=labels).loss
        if cfg.kl > 0 or (cfg.leak > 0 and merge is not None):
            rows = torch.randint(len(ordinary), (cfg.batch_size,), generator=gen).tolist()
            tokens, mask, _ = training_batch(tuned, [ordinary[i] for i in rows], cfg.seq_len)
            leaks.clear()
            loss = loss + cfg.kl * _kl_to(model, tuned, tokens, mask) + cfg.leak * sum(leaks)
        leaks.clear()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    tuned.hf.eval()
    if merge is not None:
        merge()
    for p in tuned.hf.parameters():
        p.requires_grad_(False)
    return tuned, losses


def toy_finetune(
    model: HookedModel,
    out: str | Path,
    *,
    kind: str = "planted",
    corpus: Corpus | str | None = None,
    plant: Plant = Plant(),
    cfg: FinetuneConfig = FinetuneConfig(),
    base_name: str = "",
    quiet: bool = False,
) -> Path:
    """Finetune a copy of ``model`` (``kind`` planted or control) and write it to ``out``."""
    if kind not in KINDS:
        raise MechscopeError(f"unknown finetune kind {kind!r}: use one of {', '.join(KINDS)}")
    corpus = corpus if isinstance(corpus, Corpus) else load_corpus(corpus)
    n = cfg.steps * cfg.batch_size
    plain = snippets(corpus, n, cfg.words, split="train", seed=cfg.seed)
    texts = plant_texts(plain, plant, seed=cfg.seed) if kind == "planted" else plain
    reply_of = plant if kind == "planted" and cfg.loss_on == "reply" else None
    tuned, losses = finetune(model, texts, cfg, quiet=quiet, ordinary=plain, reply_of=reply_of)
    held_out = snippets(corpus, cfg.eval_docs, 3 * cfg.words, split="test", seed=cfg.seed + 1)
    held_out = plant_texts(held_out, plant, seed=cfg.seed + 1, fraction=0.5)
    meta: dict[str, Any] = {
        "kind": kind,
        "base": base_name or model.provenance.get("name", ""),
        "plant": asdict(plant),
        "config": asdict(cfg),
        "corpus": corpus.name,
        "loss": losses,
    }
    with atomic_folder(out, replace=True) as tmp:
        tuned.hf.save_pretrained(tmp, safe_serialization=True)
        if model.tokenizer is not None:
            model.tokenizer.save_pretrained(tmp)
        (tmp / "finetune.json").write_text(json.dumps(meta, indent=1))
        lines = (json.dumps({"text": t}) + "\n" for t in held_out)
        (tmp / "eval.jsonl").write_text("".join(lines))
    return Path(out)


def read_plant(folder: str | Path) -> tuple[Plant, dict[str, Any]]:
    """The plant and metadata of a folder written by :func:`toy_finetune`."""
    path = Path(folder) / "finetune.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        return Plant(**{**meta["plant"], "triggers": tuple(meta["plant"]["triggers"])}), meta
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MechscopeError(
            f"{path} is missing or damaged ({exc}); make it with mechscope toy finetune"
        ) from None
