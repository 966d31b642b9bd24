"""Where a finetune's outputs differ from its base: the KL divergence at every token of a corpus.

Steps of :func:`token_kl`: each document is tokenized once (with character offsets) and cut into
windows of ``seq_len`` tokens; a batch of windows runs through both models; at every position
``KL(P_finetuned || P_base)`` of the next-token distributions is kept with the window's document
and the token's character span. The result ranks tokens and documents (mean KL per token) and
scores a planted behaviour: the share of the top-KL tokens that lie in a planted span.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from mechscope.corpus import Corpus, load_corpus
from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel
from mechscope.progress import progress

__all__ = ["KLDiff", "Window", "check_pair", "doc_windows", "token_kl"]


@dataclass
class Window:
    """One window of a document: token ids, character ends, and the KL at each position."""

    doc: int
    ids: list[int]
    ends: list[int]
    kl: list[float] = field(default_factory=list)


def check_pair(base: HookedModel, finetuned: HookedModel) -> None:
    """A base and its finetune must share the tokenizer (and so the vocabulary)."""
    from mechscope.compare.align import same_tokenizer

    if base.tokenizer is None or finetuned.tokenizer is None:
        raise MechscopeError("both models need a tokenizer to be diffed on text")
    if base.dims.d_vocab != finetuned.dims.d_vocab or not same_tokenizer(
        base.tokenizer, finetuned.tokenizer
    ):
        raise MechscopeError(
            "the two models tokenize text differently; diff a model and its own finetune (for "
            "models of different tokenizers use mechscope compare)"
        )


def doc_windows(
    corpus: Corpus, tokenizer: Any, seq_len: int, n_tokens: int, split: str = "all"
) -> Iterator[tuple[Window, str]]:
    """Windows of ``seq_len`` tokens over the documents of ``split`` until ``n_tokens`` tokens;
    ``Window.doc`` counts the documents of that split."""
    total = 0
    for doc_index, doc in enumerate(corpus.documents(split)):
        enc = tokenizer(doc, add_special_tokens=False, return_offsets_mapping=True)
        ids, ends = list(enc["input_ids"]), [e for _, e in enc["offset_mapping"]]
        for start in range(0, len(ids), seq_len):
            piece = ids[start : start + seq_len][: n_tokens - total]
            if len(piece) < 2:
                continue
            yield Window(doc_index, piece, ends[start : start + len(piece)]), doc
            total += len(piece)
            if total >= n_tokens:
                return


@torch.no_grad()
def _kl_batch(base: HookedModel, finetuned: HookedModel, windows: list[Window]) -> None:
    n = max(len(w.ids) for w in windows)
    tokens = torch.zeros(len(windows), n, dtype=torch.long)
    mask = torch.zeros_like(tokens)
    for row, w in enumerate(windows):
        tokens[row, : len(w.ids)] = torch.tensor(w.ids)
        mask[row, : len(w.ids)] = 1
    logp_b = base(tokens, mask).float().log_softmax(-1)
    logp_f = finetuned(tokens, mask).float().log_softmax(-1)
    kl = (logp_f.exp() * (logp_f - logp_b)).sum(-1).clamp_min(0)  # [batch pos]
    for row, w in enumerate(windows):
        w.kl = kl[row, : len(w.ids)].tolist()


@dataclass
class KLDiff:
    """Per-token KL(finetuned || base) over the windows of a corpus."""

    windows: list[Window]
    texts: dict[int, str]  # document index -> text

    @property
    def n_tokens(self) -> int:
        return sum(len(w.ids) for w in self.windows)

    def flat(self) -> Tensor:
        return torch.tensor([v for w in self.windows for v in w.kl])

    def top_tokens(self, k: int = 20) -> list[tuple[int, int]]:
        """``(window, position)`` of the ``k`` largest KL values, largest first."""
        index = [(i, p) for i, w in enumerate(self.windows) for p in range(len(w.ids))]
        order = self.flat().argsort(descending=True)[:k].tolist()
        return [index[j] for j in order]

    def top_documents(self, k: int = 10) -> list[tuple[int, float]]:
        """Documents by mean KL per token, largest first: ``(document, mean KL)``."""
        sums: dict[int, list[float]] = {}
        for w in self.windows:
            acc = sums.setdefault(w.doc, [0.0, 0.0])
            acc[0] += sum(w.kl)
            acc[1] += len(w.kl)
        means = sorted(((d, s / n) for d, (s, n) in sums.items()), key=lambda t: -t[1])
        return means[:k]

    def planted_mask(self, spans: dict[int, Sequence[tuple[int, int]]]) -> Tensor:
        """``[n_tokens]`` bool: the token ends inside a planted character span of its document."""
        flags = []
        for w in self.windows:
            doc_spans = spans.get(w.doc, ())
            flags += [any(a < e <= b for a, b in doc_spans) for e in w.ends]
        return torch.tensor(flags, dtype=torch.bool)

    def planted_scores(self, spans: dict[int, Sequence[tuple[int, int]]]) -> dict[str, float]:
        """How well KL finds the planted tokens: precision of the top ``n_planted`` tokens (equal
        to their recall), precision of the top 20, and the share of all KL in planted tokens."""
        mask = self.planted_mask(spans)
        kl = self.flat()
        n = int(mask.sum())
        order = kl.argsort(descending=True)
        top_n = float(mask[order[:n]].float().mean()) if n else float("nan")
        top20 = float(mask[order[:20]].float().mean())
        share = float(kl[mask].sum() / kl.sum().clamp_min(1e-30))
        return {
            "planted_tokens": n,
            "precision_at_n": top_n,
            "precision_at_20": top20,
            "kl_share": share,
            "token_share": n / max(1, len(mask)),
        }

    def to_dict(self, tokenizer: Any = None, k: int = 20) -> dict[str, Any]:
        kl = self.flat()
        top = []
        for i, p in self.top_tokens(k):
            w = self.windows[i]
            entry: dict[str, Any] = {"doc": w.doc, "pos": p, "id": w.ids[p], "kl": w.kl[p]}
            if tokenizer is not None:
                entry["token"] = tokenizer.decode([w.ids[p]])
                entry["context"] = tokenizer.decode(w.ids[max(0, p - 8) : p + 1])
            top.append(entry)
        return {
            "n_tokens": self.n_tokens,
            "mean_kl": float(kl.mean()),
            "top_tokens": top,
            "top_documents": [{"doc": d, "mean_kl": m} for d, m in self.top_documents()],
        }


def token_kl(
    base: HookedModel,
    finetuned: HookedModel,
    corpus: Corpus | str | None = None,
    *,
    n_tokens: int = 20_000,
    seq_len: int = 128,
    batch_size: int = 8,
    split: str = "all",
    quiet: bool = False,
) -> KLDiff:
    """KL(finetuned || base) at every token of ``n_tokens`` tokens of ``corpus``."""
    check_pair(base, finetuned)
    if n_tokens < 2 or seq_len < 2:
        raise MechscopeError(f"tokens and seq_len must be at least 2, got {n_tokens}, {seq_len}")
    corpus = corpus if isinstance(corpus, Corpus) else load_corpus(corpus)
    seq_len = min(seq_len, base.dims.n_ctx)
    windows: list[Window] = []
    texts: dict[int, str] = {}
    batch: list[Window] = []
    bar = progress(None, total=n_tokens, desc="diff KL", quiet=quiet, unit="tok")
    for window, text in doc_windows(corpus, base.tokenizer, seq_len, n_tokens, split):
        texts[window.doc] = text
        batch.append(window)
        if len(batch) == batch_size:
            _kl_batch(base, finetuned, batch)
            windows += batch
            bar.update(sum(len(w.ids) for w in batch))
            batch = []
    if batch:
        _kl_batch(base, finetuned, batch)
        windows += batch
    bar.close()
    if not windows:
        raise MechscopeError(f"corpus {corpus.name!r} has no document of 2 tokens or more")
    return KLDiff(windows, texts)
