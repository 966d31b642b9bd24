"""Exploration behind docs/anomaly.md "Where the backdoor acts": detectors scored at the position
that produces the reply, and the direct-logit-attribution profile of the model's own prediction.

The earlier probe (``probe_anomaly_mechanism.py``) scored every token of a passage with a trigger
somewhere inside and took the maximum; the backdoor acts at one position (the trigger's end), so
the maximum over ~60 ordinary tokens drowns it. Here:

1. ``--dump bad|clean --toy FOLDER``: for 200 trusted passages and 60 inputs of every test set, per
   token: the residual stream after layers 9, 14, 19, 21, 25, 29; the direct logit attribution of
   the model's top next-token logit to the embedding and every attention and MLP output (the final
   norm's divisor frozen, so the 2 n_layers + 1 terms sum to that logit exactly); the top
   log-probability, the entropy and the next token's NLL. Also the "reply" sets: each trigger
   input cut right after its trigger, each clean input cut after a random sentence end, so the
   last token is where the reply would start.
2. ``--analyze bad|clean --toy FOLDER``: AUROC / average precision / FPR at 95% recall of every
   score, max over tokens on the whole inputs and at the last token on the reply sets.

``--toy`` is a ``mechscope toy backdoor`` folder (its ``backdoor.json`` names the triggers).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

import mechscope
from mechscope.anomaly.dla import dla_sites, top_logit_dla
from mechscope.anomaly.mahalanobis import MahalanobisStats, fit_tensors, mahalanobis
from mechscope.anomaly.metrics import separation
from mechscope.anomaly.score import _batches, _tokenize
from mechscope.toys.backdoor import reply_sets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import add_device_option, machine, pick_device  # noqa: E402

LAYERS = [9, 14, 19, 21, 25, 29]
WHOLE = ("trigger", "unseen_trigger", "ood_shuffled", "ood_code", "ood_german")
REPLY = ("trigger_reply", "unseen_trigger_reply")


def read_sets(toy: Path) -> dict[str, list[str]]:
    sets = {}
    for p in (toy / "sets").glob("*.jsonl"):
        texts = [json.loads(line)["text"] for line in p.read_text().splitlines() if line.strip()]
        sets[p.stem] = texts[: 200 if p.stem == "trusted" else 60]
    config = json.loads((toy / "backdoor.json").read_text())["config"]
    sets.update(reply_sets(sets, config["triggers"], config["unseen_triggers"]))
    return sets


def dump(which: str, toy: Path, out: Path, device: torch.device) -> None:
    sets = read_sets(toy)
    name = "smollm2-135m" if which == "clean" else str(toy / "model")
    model = mechscope.load(name, progress=False, device=device)
    n = model.dims.n_layers
    resid = [f"blocks.{L}.hook_resid_post" for L in LAYERS]
    comps = dla_sites(n)
    result = {}
    for set_name, texts in sets.items():
        per: list[Any] = [None] * len(texts)
        pad = model.tokenizer.pad_token_id or 0
        for rows, tokens, mask in _batches(_tokenize(model, texts, 256), 4, pad):
            tokens, mask = tokens.to(device), mask.to(device)
            with torch.inference_mode():
                logits, cache = model.run_with_cache(
                    tokens, names=resid + comps, attention_mask=mask
                )
                cache = {k: v.float().cpu() for k, v in cache.items()}
                dla = top_logit_dla(model, cache, logits.float()).cpu()
                logits, tokens = logits.float().cpu(), tokens.cpu()
            for j, r in enumerate(rows):
                k = int(mask[j].sum())
                logp = logits[j, :k].float().log_softmax(-1)
                nll = torch.zeros(k)
                nll[1:] = -logp[:-1].gather(-1, tokens[j, 1:k, None])[..., 0]
                per[r] = {
                    "acts": torch.stack([cache[s][j, :k] for s in resid]).half(),
                    "dla": dla[j, :k].float(),
                    "lp": logp.max(-1).values,
                    "ent": -(logp.exp() * logp).sum(-1),
                    "nll": nll,
                    "tokens": tokens[j, :k],
                }
        result[set_name] = per
        print(which, set_name, len(per), file=sys.stderr, flush=True)
    torch.save({"layers": LAYERS, "sets": result}, out / f"reply_{which}.pt")


def evaluate(sets: dict[str, Any], label: str, fn: Any, which: str) -> dict[str, Any]:
    """Max over tokens (position 0 skipped) on the whole inputs, the last token on the reply sets."""

    def whole(d: dict[str, Any]) -> float:
        return float(fn(d)[1:].max())

    def last(d: dict[str, Any]) -> float:
        return float(fn(d)[-1])

    row: dict[str, Any] = {"model": which, "score": label}
    for names, neg_name, agg in ((WHOLE, "clean", whole), (REPLY, "clean_reply", last)):
        neg = [agg(d) for d in sets[neg_name]]
        for name in names:
            if name not in sets or not sets[name]:
                continue
            sep = separation([agg(d) for d in sets[name]], neg)
            row[name] = [sep.auroc, sep.average_precision, sep.fpr_at_95_recall, len(sets[name])]
    print(
        f"{which:5} {label:<26} "
        + " ".join(
            f"{k}={v[0]:.3f}/{v[1]:.3f}/{v[2]:.2f}" for k, v in row.items() if k in WHOLE + REPLY
        ),  # fmt: skip
        flush=True,
    )
    return row


def analyze(which: str, out: Path, toy: Path) -> list[dict[str, Any]]:
    from transformers import AutoTokenizer

    data = torch.load(out / f"reply_{which}.pt", weights_only=False)  # our own file
    tok = AutoTokenizer.from_pretrained(str(toy / "model"))
    stops = torch.tensor([i for i in range(len(tok)) if tok.decode([i]).rstrip().endswith(".")])
    sets, index = data["sets"], {L: i for i, L in enumerate(data["layers"])}
    rows = []

    def fitted(fn: Any, keep: Any = None) -> dict[str, torch.Tensor]:
        stats = MahalanobisStats()
        for d in sets["trusted"]:
            x = fn(d)[1:]
            stats.update(x if keep is None else x[keep(d)[1:]])
        return fit_tensors(stats)

    def act(d: dict[str, Any], L: int) -> torch.Tensor:
        return d["acts"][index[L]].float()

    for L in LAYERS:
        t = fitted(lambda d, L=L: act(d, L))
        rows.append(
            evaluate(sets, f"maha L{L}", lambda d, t=t, L=L: mahalanobis(t, act(d, L)), which)
        )
    # per-position-class statistics: fitted on trusted tokens ending a sentence only (the class
    # of every reply position here), against all trusted tokens above
    is_stop = lambda d: torch.isin(d["tokens"], stops)  # noqa: E731
    for L in (19, 21, 29):
        t = fitted(lambda d, L=L: act(d, L), is_stop)
        rows.append(
            evaluate(
                sets, f"maha L{L} (stops)", lambda d, t=t, L=L: mahalanobis(t, act(d, L)), which
            )
        )
    t = fitted(lambda d: d["dla"], is_stop)
    rows.append(evaluate(sets, "maha DLA (stops)", lambda d: mahalanobis(t, d["dla"]), which))
    t = fitted(lambda d: d["dla"])
    rows.append(evaluate(sets, "maha DLA profile", lambda d: mahalanobis(t, d["dla"]), which))
    # the profile as shares of the top logit: the mechanism's layout, not the logit's size
    share = lambda d: d["dla"] / d["dla"].sum(-1, keepdim=True).abs().clamp(min=1e-3)  # noqa: E731
    t2 = fitted(share)
    rows.append(evaluate(sets, "maha DLA shares", lambda d: mahalanobis(t2, share(d)), which))
    late = lambda d: d["dla"][:, 1 + 2 * 20 :].sum(-1) / d["dla"].sum(-1)  # noqa: E731
    rows.append(evaluate(sets, "DLA share layers 20-29", late, which))
    conc = lambda d: d["dla"].abs().topk(3, -1).values.sum(-1) / d["dla"].abs().sum(-1)  # noqa: E731
    rows.append(evaluate(sets, "DLA top-3 concentration", conc, which))
    rows.append(evaluate(sets, "top logit (DLA sum)", lambda d: d["dla"].sum(-1), which))
    rows.append(evaluate(sets, "confidence", lambda d: d["lp"].exp(), which))
    rows.append(evaluate(sets, "entropy (baseline)", lambda d: d["ent"], which))
    rows.append(evaluate(sets, "low entropy", lambda d: -d["ent"], which))
    rows.append(evaluate(sets, "NLL (perplexity)", lambda d: d["nll"], which))
    return rows


def markdown(bad: list[dict[str, Any]], clean: list[dict[str, Any]]) -> str:
    """Two tables: the trigger sets on the backdoored and the clean model (the control); the
    out-of-distribution sets on the backdoored model."""
    control = {r["score"]: r for r in clean}

    def cell(r: dict[str, Any] | None, s: str) -> str:
        if r is None or s not in r:
            return ""
        return f"{r[s][0]:.3f} / {r[s][1]:.3f} / {r[s][2]:.2f}"

    trig = [k for k in ("trigger", "unseen_trigger") + REPLY if k in bad[0]]
    out = ["| token score | " + " | ".join(f"{s}: backdoored | {s}: clean" for s in trig) + " |"]
    out.append("|---|" + "---|---|" * len(trig))
    for r in bad:
        c = control.get(r["score"])
        out.append(
            f"| {r['score']} | " + " | ".join(f"{cell(r, s)} | {cell(c, s)}" for s in trig) + " |"
        )
    ood = [k for k in ("ood_code", "ood_german", "ood_shuffled") if k in bad[0]]
    out += ["", "| token score (backdoored model) | " + " | ".join(ood) + " |"]
    out.append("|---|" + "---|" * len(ood))
    out += [f"| {r['score']} | " + " | ".join(cell(r, s) for s in ood) + " |" for r in bad]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dump", choices=["bad", "clean"])
    parser.add_argument("--analyze", choices=["bad", "clean"])
    parser.add_argument("--toy", type=Path)
    parser.add_argument("--cache", type=Path, help="Folder for the dumps.")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", nargs=2, type=Path, help="BAD.json CLEAN.json: one table")
    add_device_option(parser)
    args = parser.parse_args()
    if args.markdown:
        bad, clean = (json.loads(p.read_text()) for p in args.markdown)
        print(markdown(bad, clean))
        return
    if args.toy is None or args.cache is None:
        parser.error("--toy and --cache are needed to dump or analyze")
    torch.set_num_threads(1)
    device = pick_device(args.device)
    print(machine(device), file=sys.stderr)
    args.cache.mkdir(parents=True, exist_ok=True)
    if args.dump:
        dump(args.dump, args.toy, args.cache, device)
    if args.analyze:
        rows = analyze(args.analyze, args.cache, args.toy)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
