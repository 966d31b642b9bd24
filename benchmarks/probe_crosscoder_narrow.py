"""Exploration behind docs/diff.md "A finetune-only latent on the built-in model": crosscoders on
the narrow SmolLM2 finetune (``mechscope toy finetune --narrow``), at several sites, on cached
activations, read against the planted trigger and reply tokens.

1. ``--dump NAME MODEL``: the activations of ``--sites`` (default: layer 15's MLP output, where
   the narrow update writes, and the residual stream after layers 15 and 17) of MODEL on the
   first ``--docs`` documents of ``--eval`` (a planted folder's ``eval.jsonl``), position 0 of
   each window left out, in float16, with each token's label (0 ordinary, 1 trigger word, 2 reply) and document, into
   ``--cache/NAME.pt``. Dump the base, the planted finetune and the control on the same text.
2. ``--train FT``: a crosscoder (mechscope.diff.crosscoder, trained with mechscope.sae.fit) over
   ``base`` and ``FT`` (dump names) at ``--site``, on the documents of the first 80%, each half
   scaled as ``train_crosscoder`` does (unit mean squared norm of the rows minus their mean); read
   on the held-out 20%: the band sizes of the relative decoder norm, every finetune-only latent
   and the most finetune-leaning ones with latent scaling (``nu_eps``, ``nu_r``), their precision,
   recall and AUROC on the trigger tokens and on the whole phrase (trigger and reply), and the
   latent that finds the triggers best. One JSON line per run is appended to
   ``--cache/results.jsonl``, with the CPU seconds.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

from mechscope.corpus import from_files
from mechscope.diff.crosscoder import (
    activation_scores,
    classify,
    latent_scaling,
    make_crosscoder,
    relative_norms,
)
from mechscope.diff.kl import doc_windows
from mechscope.sae import TrainConfig, fit
from mechscope.toys.finetune import planted_spans, read_plant

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import add_device_option, pick_device  # noqa: E402

SITES = "blocks.15.hook_mlp_out,blocks.15.hook_resid_post,blocks.17.hook_resid_post"


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def labels(window: Any, spans: list[tuple[int, int]], reply: int) -> list[int]:
    out = []
    for end in window.ends[1:]:
        kind = 0
        for a, b in spans:
            if a < end <= b - reply:
                kind = 1
            elif b - reply < end <= b:
                kind = 2
        out.append(kind)
    return out


@torch.no_grad()
def dump(args: argparse.Namespace, device: torch.device) -> None:
    import mechscope

    model = mechscope.load(args.dump[1], progress=False, device=str(device))
    plant, _ = read_plant(Path(args.eval).parent)
    corpus = from_files(args.eval)
    sites = args.sites.split(",")
    windows = [
        w for w in doc_windows(corpus, model.tokenizer, 128, 10**9, "all") if w[0].doc < args.docs
    ]
    kept: dict[str, list[torch.Tensor]] = {s: [] for s in sites}
    rows: list[int] = []
    docs: list[int] = []
    grab: dict[str, torch.Tensor] = {}

    def keep(t: torch.Tensor, hook: Any) -> None:
        grab[hook.name] = t.detach()

    for start in range(0, len(windows), 8):
        chunk = windows[start : start + 8]
        n = max(len(w.ids) for w, _ in chunk)
        tokens = torch.zeros(len(chunk), n, dtype=torch.long)
        mask = torch.zeros_like(tokens)
        for r, (w, _) in enumerate(chunk):
            tokens[r, : len(w.ids)] = torch.tensor(w.ids)
            mask[r, : len(w.ids)] = 1
        with model.hooks([(s, keep) for s in sites], stop_after=sites):
            model.forward(tokens.to(device), mask.to(device))
        for r, (w, text) in enumerate(chunk):
            for s in sites:
                kept[s].append(grab[s][r, 1 : len(w.ids)].half().cpu())
            rows += labels(w, planted_spans(text, plant), len(plant.reply))
            docs += [w.doc] * (len(w.ids) - 1)
    out = {s: torch.cat(v) for s, v in kept.items()}
    out["label"] = torch.tensor(rows, dtype=torch.int8)
    out["doc"] = torch.tensor(docs)
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    torch.save(out, Path(args.cache) / f"{args.dump[0]}.pt")
    n_trig = int((out["label"] == 1).sum())
    print(f"{args.dump[0]}: {len(rows)} tokens, {n_trig} trigger, {cpu_seconds():.0f} CPU-s")


def centred(x: torch.Tensor) -> tuple[torch.Tensor, float]:
    mean = x.double().mean(0)
    return mean.float(), float((x.double() - mean).pow(2).sum(-1).mean()) ** -0.5


def scores_on(acts: torch.Tensor, label: torch.Tensor) -> dict[str, float]:
    trig = activation_scores(acts, label == 1)
    phrase = activation_scores(acts, label > 0)
    keys = ("precision", "recall", "strong_precision", "strong_recall", "auroc", "fires")
    out = {k: trig[k] for k in keys}
    out.update({f"phrase_{k}": phrase[k] for k in ("precision", "recall", "auroc")})
    return out


def train(args: argparse.Namespace, device: torch.device) -> None:
    torch.manual_seed(args.seed)
    base = torch.load(Path(args.cache) / "base.pt")
    ft = torch.load(Path(args.cache) / f"{args.train}.pt")
    doc, label = base["doc"], base["label"]
    assert torch.equal(doc, ft["doc"]), "dumps of different text"
    test = doc >= int(0.8 * (int(doc.max()) + 1))
    xb, xf = base[args.site].float(), ft[args.site].float()
    (mb, sb), (mf, sf) = centred(xb[~test]), centred(xf[~test])
    x = torch.cat([xb * sb, xf * sf], -1).to(device)
    d = xb.shape[1]
    sae = make_crosscoder(args.variant, d, args.expansion * d, k=args.k, seed=args.seed).to(device)
    with torch.no_grad():
        sae.b_dec.copy_(torch.cat([mb * sb, mf * sf]).to(device))
    train_rows = torch.nonzero(~test).flatten()
    gen = torch.Generator().manual_seed(args.seed)

    def batches() -> Any:
        while True:
            yield x[train_rows[torch.randint(len(train_rows), (args.batch_size,), generator=gen)]]

    cfg = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=max(1, args.steps // 100),
        sparsity_warmup_steps=args.steps // 20 if args.variant == "l1" else 0,
        seed=args.seed,
        init_b_dec=False,
        log_every=max(1, args.steps // 10),
    )
    start, cpu0 = time.perf_counter(), cpu_seconds()
    fit(sae, batches(), cfg, progress=False)
    sae.eval()
    with torch.no_grad():
        xt, lt = x[test.to(device)], label[test]
        acts = sae.encode(xt).float().cpu()
        fvu = float((sae(xt).x_hat - xt).pow(2).sum() / (xt - xt.mean(0)).pow(2).sum())
    alive = (acts > 0).any(0)
    delta = relative_norms(sae).cpu()
    bands = classify(delta.masked_fill(~alive, float("nan")))
    order = [int(j) for j in delta.masked_fill(~alive, -1.0).argsort(descending=True)]
    listed = sorted(set(bands["finetune-only"]) | set(order[: args.top]))
    f1 = [
        activation_scores(acts[:, j], lt == 1)["f1"] if alive[j] else -1.0
        for j in range(acts.shape[1])
    ]
    best = max(range(len(f1)), key=f1.__getitem__)
    scaling = latent_scaling(sae, xt, sorted(set(listed) | {best}))

    def row(j: int) -> dict[str, Any]:
        out = {"latent": j, "delta": round(float(delta[j]), 3), "rank": order.index(j)}
        out.update({k: round(v, 3) for k, v in scaling[j].items() if k != "fires"})
        out.update({k: round(v, 3) for k, v in scores_on(acts[:, j], lt).items()})
        return out

    result = {
        "ft": args.train,
        "site": args.site,
        "variant": args.variant,
        "expansion": args.expansion,
        "k": args.k,
        "steps": args.steps,
        "lr": args.lr,
        "seed": args.seed,
        "test_tokens": int(test.sum()),
        "test_triggers": int((lt == 1).sum()),
        "fvu": round(fvu, 4),
        "alive": int(alive.sum()),
        "bands": {name: len(idx) for name, idx in bands.items()},
        "finetune_only": [row(j) for j in bands["finetune-only"]],
        "most_finetune": [row(j) for j in order[: args.top]],
        "best_trigger": row(best),
        "cpu_s": round(cpu_seconds() - cpu0),
        "wall_s": round(time.perf_counter() - start),
    }
    with open(Path(args.cache) / "results.jsonl", "a") as fh:
        fh.write(json.dumps(result) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "most_finetune"}, indent=1))
    for r in result["most_finetune"]:
        print(r)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default="/work/cache/diff/cc-probe")
    parser.add_argument("--dump", nargs=2, metavar=("NAME", "MODEL"))
    parser.add_argument("--eval", help="--dump: the planted folder's eval.jsonl")
    parser.add_argument("--sites", default=SITES)
    parser.add_argument("--docs", type=int, default=250, help="--dump: the first DOCS documents")
    parser.add_argument("--train", metavar="FT", help="dump name of the finetune (base: 'base')")
    parser.add_argument("--site", default="blocks.15.hook_mlp_out")
    parser.add_argument("--variant", default="batchtopk", choices=["l1", "batchtopk"])
    parser.add_argument("--expansion", type=int, default=4)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--top", type=int, default=5)
    add_device_option(parser)
    args = parser.parse_args()
    torch.set_num_threads(1)
    device = pick_device(args.device)
    if args.dump:
        dump(args, device)
    if args.train:
        train(args, device)


if __name__ == "__main__":
    main()
