"""Exploration behind docs/anomaly.md "Detecting the mechanism": token scores that might single out
the planted backdoor's mechanism rather than unusual text, on cached activations.

1. ``--dump bad|clean``: the residual stream after layers 9, 14, 17, 19, 21, 23, 25, 27, 29 of the
   backdoored (``mechscope toy backdoor``) or the clean SmolLM2-135M-Instruct, for 240 trusted
   passages and 60 of each test set, plus the model's top next-token log-probability and each
   token's NLL, into ``--cache`` (float16; about 400 MB per model).
2. ``--analyze bad|clean``: from a dump, with max aggregation over tokens against the clean set:
   Mahalanobis per layer; the conditional Mahalanobis of a late layer given layer 17 or 19 (the
   joint Gaussian's ``y | x``: the residual of the late layer after the linear prediction from the
   earlier one, under the Schur-complement precision); Mahalanobis of the difference of the two;
   the logit-lens KL ``KL(p_final || p_lens(L))`` and the log-probability gain of the final top
   token, z-scored by trusted tokens, max and mean aggregated.
3. ``--trigger-end bad|clean``: where the backdoor fires (the token ending "2024."), the share of
   trusted tokens with a lower score, per score, and how often the input's top token is there.

Run ``--dump`` for both models first (minutes each); the others read the dumps.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

import mechscope
from mechscope.anomaly.mahalanobis import MahalanobisStats, fit_tensors, mahalanobis
from mechscope.anomaly.metrics import separation
from mechscope.anomaly.score import _batches, _tokenize
from mechscope.files import cache_root

LAYERS = [9, 14, 17, 19, 21, 23, 25, 27, 29]
TESTS = ("trigger", "unseen_trigger", "ood_shuffled", "ood_code", "ood_german")


def toy_folder() -> Path:
    return sorted((cache_root() / "toys" / "backdoor").glob("*"))[0]


def load(which: str) -> Any:
    folder = toy_folder()
    name = "smollm2-135m" if which == "clean" else str(folder / "model")
    return mechscope.load(name, progress=False)


def dump(which: str, out: Path) -> None:
    folder = toy_folder()
    sets = {}
    for p in (folder / "sets").glob("*.jsonl"):
        texts = [json.loads(line)["text"] for line in p.read_text().splitlines() if line.strip()]
        sets[p.stem] = texts[: 240 if p.stem == "trusted" else 60]
    model = load(which)
    sites = [f"blocks.{L}.hook_resid_post" for L in LAYERS]
    result = {}
    for name, texts in sets.items():
        per: list[Any] = [None] * len(texts)
        pad = model.tokenizer.pad_token_id or 0
        for rows, tokens, mask in _batches(_tokenize(model, texts, 256), 8, pad):
            with torch.inference_mode():
                logits, cache = model.run_with_cache(tokens, names=sites, attention_mask=mask)
            for j, r in enumerate(rows):
                n = int(mask[j].sum())
                logp = logits[j, :n].float().log_softmax(-1)
                per[r] = {
                    "acts": torch.stack([cache[s][j, :n] for s in sites]).half(),
                    "tokens": tokens[j, :n],
                    "lp": logp.max(-1),
                    "nll": -logp[:-1].gather(-1, tokens[j, 1:n, None])[..., 0],
                }
        result[name] = per
        print(name, len(per), file=sys.stderr, flush=True)
    torch.save({"layers": LAYERS, "sets": result}, out / f"dump_{which}.pt")


class Dump:
    def __init__(self, which: str, cache: Path) -> None:
        data = torch.load(cache / f"dump_{which}.pt", weights_only=False)  # our own file
        self.which, self.sets = which, data["sets"]
        self.index = {L: i for i, L in enumerate(data["layers"])}

    def act(self, d: dict[str, Any], layer: int) -> torch.Tensor:
        return d["acts"][self.index[layer]].float()

    def fit(self, fn: Any) -> dict[str, torch.Tensor]:
        stats = MahalanobisStats()
        for d in self.sets["trusted"]:
            stats.update(fn(d)[1:])
        return fit_tensors(stats)

    def evaluate(self, label: str, token_score: Any, how: str = "max") -> None:
        def score(d: dict[str, Any]) -> float:
            s = token_score(d)[1:]
            return float(s.max() if how == "max" else s.mean())

        neg = [score(d) for d in self.sets["clean"]]
        cells = []
        for name in TESTS:
            sep = separation([score(d) for d in self.sets[name]], neg)
            cells.append(
                f"{name}={sep.auroc:.3f}/{sep.average_precision:.3f}/{sep.fpr_at_95_recall:.2f}"
            )
        print(f"{self.which:5} {label:<24} " + " ".join(cells), flush=True)


def conditional(dump_: Dump, x: int, y: int) -> Any:
    """Token scores: Mahalanobis of layer y given layer x under the trusted joint Gaussian."""
    joint = dump_.fit(lambda d: torch.cat([dump_.act(d, x), dump_.act(d, y)], -1))
    p = joint["precision"].double()
    d0 = p.shape[0] // 2
    pyy = p[d0:, d0:]
    k = torch.linalg.solve(pyy, p[d0:, :d0])
    mx, my = joint["mean"][:d0].double(), joint["mean"][d0:].double()

    def score(d: dict[str, Any]) -> torch.Tensor:
        r = (dump_.act(d, y).double() - my) + (dump_.act(d, x).double() - mx) @ k.T
        return ((r @ pyy) * r).sum(-1)

    return score


def analyze(dump_: Dump, model: Any) -> None:
    for L in LAYERS:
        t = dump_.fit(lambda d, L=L: dump_.act(d, L))
        dump_.evaluate(f"maha L{L}", lambda d, t=t, L=L: mahalanobis(t, dump_.act(d, L)))
    for x in (17, 19):
        for y in (21, 23, 25, 27, 29):
            dump_.evaluate(f"cond L{y}|L{x}", conditional(dump_, x, y))
            t = dump_.fit(lambda d, x=x, y=y: dump_.act(d, y) - dump_.act(d, x))
            dump_.evaluate(
                f"delta L{y}-L{x}",
                lambda d, t=t, x=x, y=y: mahalanobis(t, dump_.act(d, y) - dump_.act(d, x)),
            )
    for L in (17, 19):
        for j, name in enumerate(("kl", "gain")):
            fn = lambda d, L=L, j=j: logit_lens(dump_, model, d, L)[j]  # noqa: E731
            vals = torch.cat([fn(d)[1:] for d in dump_.sets["trusted"][:120]])
            m, s = float(vals.mean()), float(vals.std())
            for how in ("max", "mean"):
                dump_.evaluate(
                    f"lens {name} L{L} {how}", lambda d, fn=fn, m=m, s=s: (fn(d) - m) / s, how
                )


def logit_lens(dump_: Dump, model: Any, d: dict[str, Any], layer: int) -> tuple[Any, Any]:
    """Per token: KL(final || logit lens at layer) and the final top token's log-prob gain."""
    with torch.inference_mode():
        lf = model.unembed(model.final_norm(dump_.act(d, 29)[None]))[0].float().log_softmax(-1)
        ll = model.unembed(model.final_norm(dump_.act(d, layer)[None]))[0].float().log_softmax(-1)
    top = lf.argmax(-1)[:, None]
    kl = (lf.exp() * (lf - ll)).sum(-1)
    return kl, lf.gather(-1, top)[:, 0] - ll.gather(-1, top)[:, 0]


def trigger_end(dump_: Dump, model: Any) -> None:
    tok = model.tokenizer

    def ends(d: dict[str, Any]) -> list[int]:
        s = [tok.decode(t) for t in d["tokens"].tolist()]
        return [p for p in range(4, len(s)) if "".join(s[p - 4 : p + 1]).endswith("2024.")]

    def report(name: str, fn: Any) -> None:
        trusted = torch.cat([fn(d)[1:] for d in dump_.sets["trusted"][:120]]).numpy()
        cases = [(fn(d), ends(d)) for d in dump_.sets["trigger"][:40]]
        pct = np.mean([np.mean(trusted < float(s[e[0]])) for s, e in cases if e])
        top = np.mean([abs(int(s[1:].argmax()) + 1 - e[0]) <= 1 for s, e in cases if e])
        print(f"{dump_.which:5} {name:<12} percentile {pct:.3f} top-at-end {top:.2f}", flush=True)

    for L in LAYERS:
        t = dump_.fit(lambda d, L=L: dump_.act(d, L))
        report(f"maha L{L}", lambda d, t=t, L=L: mahalanobis(t, dump_.act(d, L)))
    report("confidence", lambda d: d["lp"].values.exp())
    report("nll(next)", lambda d: torch.cat([d["nll"], torch.zeros(1)]))
    report("gain L19", lambda d: logit_lens(dump_, model, d, 19)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dump", choices=["bad", "clean"])
    parser.add_argument("--analyze", choices=["bad", "clean"])
    parser.add_argument("--trigger-end", choices=["bad", "clean"])
    parser.add_argument("--cache", type=Path, default=Path("/work/cache/backdoor"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.cache.mkdir(parents=True, exist_ok=True)
    if args.dump:
        dump(args.dump, args.cache)
    clean = mechscope.load("smollm2-135m", progress=False)  # final norm and unembedding: frozen
    if args.analyze:
        analyze(Dump(args.analyze, args.cache), clean)
    if args.trigger_end:
        trigger_end(Dump(args.trigger_end, args.cache), clean)


if __name__ == "__main__":
    main()
