"""Where a planted backdoor runs, component by component: every attention head's output
(``blocks.L.attn.hook_z``, 64 numbers) and every MLP's output at the reply position, each scored
by its own Mahalanobis distance from trusted tokens, on the backdoored model and on the clean one.

Two questions (docs/anomaly.md, "Where the backdoor runs"):
1. Does one component separate the triggered prompts from clean ones (chosen with the labels:
   a localisation, not a detector)?
2. Does any way of combining the components that uses trusted text only find it: the largest
   standardised distance, the mean of the top k, the smallest empirical p-value, Fisher's sum,
   the count of p < 0.001, a Gaussian over the 270 heads' log distances?
3. How many flagged examples find it: the component most extreme on k triggered prompts,
   scored alone on the others.

    python benchmarks/probe_anomaly_heads.py --dump backdoored --toy TOY --out b.pt
    python benchmarks/probe_anomaly_heads.py --dump clean --toy TOY --out c.pt
    python benchmarks/probe_anomaly_heads.py --analyze b.pt c.pt [b2.pt c2.pt ...]

A dump fits on ``--n-tokens`` trusted tokens (the toy's 48-token windows, seed 0) and keeps 100
prompts of each reply set (``toys.backdoor.reply_sets``); ~55 CPU-s on SmolLM2 at 6,144 tokens.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

import mechscope
from mechscope.anomaly.mahalanobis import MahalanobisStats, fit_tensors, mahalanobis
from mechscope.anomaly.metrics import separation
from mechscope.anomaly.score import _batches, _tokenize

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import add_device_option, pick_device  # noqa: E402
from probe_anomaly_holdout import REPLY, _trusted, read_sets  # noqa: E402

EPS = 1e-6


def _components(model: Any, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[Any, Any]:
    """Head outputs [layer batch pos head d_head] and MLP outputs [layer batch pos d]."""
    n = model.dims.n_layers
    heads = [f"blocks.{L}.attn.hook_z" for L in range(n)]
    mlps = [f"blocks.{L}.hook_mlp_out" for L in range(n)]
    with torch.inference_mode():
        _, cache = model.run_with_cache(tokens, names=heads + mlps, attention_mask=mask)
    return torch.stack([cache[s] for s in heads]), torch.stack([cache[s] for s in mlps])


def dump(args: argparse.Namespace, device: torch.device) -> None:
    sets = read_sets(args.toy)
    name = "smollm2-135m" if args.dump == "clean" else str(args.toy / "model")
    model = mechscope.load(name, progress=False, device=device)
    fz, fm = [], []
    for batch in _trusted(sets, model, args.n_tokens):
        z, m = _components(model, batch, torch.ones_like(batch))
        fz.append(z[:, :, 1:].flatten(1, 2).half())
        fm.append(m[:, :, 1:].flatten(1, 2).half())
    out: dict[str, Any] = {"toy": str(args.toy), "which": args.dump}
    out["fit_z"], out["fit_m"] = torch.cat(fz, 1), torch.cat(fm, 1)  # [layer tokens ...]
    pad = model.tokenizer.pad_token_id or 0
    for set_name in REPLY:
        texts = sets[set_name][: args.n]
        zs, ms = {}, {}
        for rows, tokens, mask in _batches(_tokenize(model, texts, 256), 8, pad):
            z, m = _components(model, tokens, mask)
            for j, r in enumerate(rows):
                last = int(mask[j].sum()) - 1
                zs[r], ms[r] = z[:, j, last].half(), m[:, j, last].half()
        out[set_name + "_z"] = torch.stack([zs[i] for i in range(len(texts))], 1)
        out[set_name + "_m"] = torch.stack([ms[i] for i in range(len(texts))], 1)
    torch.save(out, args.out)


def _pick(x: torch.Tensor, what: str, layer: int, head: int | None) -> torch.Tensor:
    return (x[layer, :, head] if what == "z" else x[layer]).float()


def log_distances(d: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Per component (270 heads, then 30 MLPs) the log Mahalanobis distance of every reply
    prompt [prompts components] and of the second half of the trusted tokens (``"trusted"``),
    each component fitted on the first half (alternate tokens)."""
    fz = d["fit_z"]
    first = torch.arange(fz.shape[1]) % 2 == 0
    n_layers, _, n_heads, _ = fz.shape
    parts: dict[str, list[torch.Tensor]] = {s: [] for s in ("trusted", *REPLY)}
    comps = [("z", L, h) for L in range(n_layers) for h in range(n_heads)]
    comps += [("m", L, None) for L in range(n_layers)]
    for what, L, h in comps:
        fit = _pick(d[f"fit_{what}"], what, L, h)
        st = MahalanobisStats()
        st.update(fit[first])
        t = fit_tensors(st)
        parts["trusted"].append(torch.log(mahalanobis(t, fit[~first]) + EPS))
        for s in REPLY:
            parts[s].append(torch.log(mahalanobis(t, _pick(d[f"{s}_{what}"], what, L, h)) + EPS))
    return {s: torch.stack(v, 1) for s, v in parts.items()}


def names(n_layers: int = 30, n_heads: int = 9) -> list[str]:
    return [f"L{L}H{h}" for L in range(n_layers) for h in range(n_heads)] + [
        f"MLP{L}" for L in range(n_layers)
    ]


def _auc(scores: dict[str, Any]) -> tuple[float, float]:
    neg = np.asarray(scores["clean_reply"])
    return (
        separation(np.asarray(scores["trigger_reply"]), neg).auroc,
        separation(np.asarray(scores["unseen_trigger_reply"]), neg).auroc,
    )


def aggregations(ld: dict[str, torch.Tensor], n_heads_total: int = 270) -> dict[str, Any]:
    """Trusted-only combinations of the components' log distances, AUROC trigger / unseen."""
    tr = ld["trusted"]
    mu, sd = tr.mean(0), tr.std(0)
    ref = torch.sort(tr, 0).values
    out = {}
    z = {s: (ld[s] - mu) / sd for s in REPLY}
    p = {}
    for s in REPLY:  # upper-tail empirical p-values against the trusted half
        above = (ref[None] >= ld[s][:, None]).sum(1).double()
        p[s] = (above + 1) / (ref.shape[0] + 1)
    out["largest z"] = _auc({s: z[s].max(1).values for s in REPLY})
    out["mean of the top 10 z"] = _auc({s: z[s].topk(10, 1).values.mean(1) for s in REPLY})
    out["smallest p"] = _auc({s: -p[s].log().max(1).values for s in REPLY})
    out["Fisher (sum of -log p)"] = _auc({s: -p[s].log().sum(1) for s in REPLY})
    out["count of p < 0.001"] = _auc({s: (p[s] < 1e-3).sum(1) - 1e-3 * p[s].log().sum(1)
                                      for s in REPLY})  # fmt: skip
    heads = slice(0, n_heads_total)
    st = MahalanobisStats()
    st.update(tr[:, heads])
    t = fit_tensors(st)
    out["Gaussian over the heads' log distances"] = _auc(
        {s: mahalanobis(t, ld[s][:, heads]) for s in REPLY}
    )
    return out


def few_shot(ld: dict[str, torch.Tensor], k: int, repeats: int = 20) -> dict[str, Any]:
    """Localisation from ``k`` flagged examples: the component with the largest mean
    standardised log distance over ``k`` random planting-trigger prompts (standardised on the
    trusted half), scored alone on the other triggered prompts and on the unseen ones against the
    clean prompts; median and worst AUROC over ``repeats`` draws, and the components picked."""
    tr = ld["trusted"]
    z = {s: (ld[s] - tr.mean(0)) / tr.std(0) for s in REPLY}
    label = names()
    seen, unseen, picks = [], [], []
    for rep in range(repeats):
        order = np.random.default_rng(rep).permutation(z["trigger_reply"].shape[0])
        shot, rest = order[:k], order[k:]
        c = int(z["trigger_reply"][shot].mean(0).argmax())
        picks.append(label[c])
        neg = z["clean_reply"][:, c].numpy()
        seen.append(separation(z["trigger_reply"][rest, c].numpy(), neg).auroc)
        unseen.append(separation(z["unseen_trigger_reply"][:, c].numpy(), neg).auroc)
    top = sorted(set(picks), key=lambda p: -picks.count(p))[:2]
    return {
        "median": (float(np.median(seen)), float(np.median(unseen))),
        "worst": (min(seen), min(unseen)),
        "picked": [(p, picks.count(p)) for p in top],
    }


def analyze(pairs: list[tuple[Path, Path]]) -> None:
    label = names()
    for bad_path, clean_path in pairs:
        bad, clean = log_distances(torch.load(bad_path)), log_distances(torch.load(clean_path))
        per_b = [_auc({s: bad[s][:, i] for s in REPLY}) for i in range(len(label))]
        per_c = [_auc({s: clean[s][:, i] for s in REPLY}) for i in range(len(label))]
        top = sorted(range(len(label)), key=lambda i: -(per_b[i][0] + per_b[i][1]))[:3]
        print(f"## {bad_path.stem} (backdoored) against {clean_path.stem} (clean model)")
        print("best single components (chosen with the labels), AUROC trigger / unseen:")
        for i in top:
            b, c = per_b[i], per_c[i]
            print(f"  {label[i]}: {b[0]:.3f} / {b[1]:.3f}   clean model {c[0]:.3f} / {c[1]:.3f}")
        n99 = sum(1 for b in per_b if b[0] >= 0.99)
        best_c = max(per_c, key=sum)
        print(f"  components >= 0.99 on the triggers: {n99} of {len(label)}; best component "
              f"on the clean model {best_c[0]:.3f} / {best_c[1]:.3f}")  # fmt: skip
        print("trusted-only combinations, backdoored | clean model:")
        agg_b, agg_c = aggregations(bad), aggregations(clean)
        for k in agg_b:
            b, c = agg_b[k], agg_c[k]
            print(f"  {k}: {b[0]:.3f} / {b[1]:.3f} | {c[0]:.3f} / {c[1]:.3f}")
        print("localised from k flagged examples (median [worst] of 20 draws, the rest / unseen):")
        for k in (1, 3, 5):
            f = few_shot(bad, k)
            picked = ", ".join(f"{p} x{n}" for p, n in f["picked"])
            print(f"  k={k}: {f['median'][0]:.3f} [{f['worst'][0]:.3f}] / {f['median'][1]:.3f} "
                  f"[{f['worst'][1]:.3f}]; picked {picked}")  # fmt: skip
        print(flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dump", choices=["backdoored", "clean"])
    parser.add_argument("--toy", type=Path, help="a `mechscope toy backdoor` folder")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--n", type=int, default=100, help="prompts per reply set")
    parser.add_argument("--n-tokens", type=int, default=6144, help="trusted tokens")
    parser.add_argument("--analyze", nargs="+", type=Path, help="dumps: backdoored, clean, ...")
    add_device_option(parser)
    args = parser.parse_args()
    if args.analyze:
        paths = args.analyze
        if len(paths) % 2:
            parser.error("--analyze takes pairs: backdoored dump, clean dump")
        analyze(list(zip(paths[::2], paths[1::2], strict=True)))
        return
    if args.dump is None or args.toy is None or args.out is None:
        parser.error("--dump needs --toy and --out")
    dump(args, pick_device(args.device))


if __name__ == "__main__":
    main()
