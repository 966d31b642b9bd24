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
3. output: a folder that ``mechscope.load`` reads (``save_pretrained`` weights and tokenizer),
   ``finetune.json`` (the kind, the plant, the settings, the loss curve) and ``eval.jsonl``: held-out
   documents (the test split, never trained on), half of them with a planted phrase, so a diff
   is scored on text neither model saw. The folder is written atomically.
"""

from __future__ import annotations

import copy
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

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
    "toy_finetune",
]

KINDS = ("planted", "control")


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
    params: str = "mlp"  # mlp: those MLPs only; all: every weight of the model
    seed: int = 0
    eval_docs: int = 200  # held-out documents in eval.jsonl (half get a phrase)

    def __post_init__(self) -> None:
        if min(self.steps, self.batch_size, self.seq_len, self.words, self.eval_docs) < 1:
            raise MechscopeError("steps, batch_size, seq_len, words and eval_docs must be >= 1")
        if not (self.lr > 0 and 0 <= self.first_layer < 1):
            raise MechscopeError(f"lr must be > 0 and first_layer in [0, 1), got {self}")
        if self.params not in ("mlp", "all"):
            raise MechscopeError(f"params must be 'mlp' or 'all', got {self.params!r}")


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


def finetune(
    model: HookedModel, texts: list[str], cfg: FinetuneConfig, *, quiet: bool = False
) -> tuple[HookedModel, list[float]]:
    """A trained copy of ``model`` (the original is untouched) and its loss per step."""
    tuned = HookedModel(copy.deepcopy(model.hf), model.tokenizer, provenance=model.provenance)
    params = _trainable(tuned, cfg)
    opt = torch.optim.Adam(params, lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    losses = []
    tuned.hf.train()
    for _ in progress(range(cfg.steps), desc="finetune", quiet=quiet):
        rows = torch.randint(len(texts), (cfg.batch_size,), generator=gen).tolist()
        tokens, mask = tuned.tokenize([texts[i] for i in rows])
        tokens, mask = tokens[:, : cfg.seq_len], mask[:, : cfg.seq_len]
        labels = tokens.masked_fill(mask == 0, -100)
        loss = tuned.hf(input_ids=tokens, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    tuned.hf.eval()
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
    texts = snippets(corpus, n, cfg.words, split="train", seed=cfg.seed)
    if kind == "planted":
        texts = plant_texts(texts, plant, seed=cfg.seed)
    tuned, losses = finetune(model, texts, cfg, quiet=quiet)
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
