"""Exploration behind docs/anomaly.md "A detector that holds across plantings" and "Word order":
dump activations once per model, then compare detector variants offline.

1. ``--dump backdoored|clean --toy FOLDER --out FILE``: the trusted windows exactly as
   ``anomaly fit`` cuts them (48 tokens, BOS first, every fifth window held out), and the reply
   sets (``toys.backdoor.reply_sets``: each prompt ends where the reply starts), through the
   model once; kept: the residual stream after every layer (float16) at every real trusted token
   and at the last token of every reply prompt, and the black-box scores there.
   ``--whole``: instead the clean and out-of-distribution sets (code, German, shuffled words),
   every token: the residual stream and the logit-lens log-probability of the actual next token
   at the layers ``LENS``, the next token's NLL and the entropy; and the same over trusted windows.
2. ``--analyze FILE...``: the variants (per-layer Mahalanobis on the residual stream, on what a
   block writes ``resid_post - resid_pre``, ...; layer ranges combined by the largest or the mean
   standardised score) as AUROC / AP / FPR at 95% recall of the trigger and the unseen trigger
   against the clean reply prompts, per dump (a backdoored model or its clean control).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

import mechscope
from mechscope.anomaly.mahalanobis import MahalanobisStats, fit_tensors, mahalanobis
from mechscope.anomaly.metrics import separation
from mechscope.anomaly.score import _batches, _tokenize
from mechscope.corpus import Corpus, batches
from mechscope.toys.backdoor import reply_sets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import add_device_option, pick_device  # noqa: E402

REPLY = ("clean_reply", "trigger_reply", "unseen_trigger_reply")
WHOLE = ("clean", "ood_code", "ood_german", "ood_shuffled")
LENS = (5, 9, 13, 17, 21, 25, 29)  # --whole: the logit lens at these layers (and the output)


def _trusted(sets: dict, model: Any, n_tokens: int) -> Any:
    """The trusted set's 48-token windows, 8 per batch (seed 0), as the detectors are fitted."""
    trusted = Corpus.from_texts(sets["trusted"])
    return batches(trusted, model.tokenizer, batch_size=8, seq_len=48, n_tokens=n_tokens, seed=0,
                   prepend_bos=True)  # fmt: skip


def read_sets(toy: Path) -> dict[str, list[str]]:
    sets = {}
    for p in (toy / "sets").glob("*.jsonl"):
        sets[p.stem] = [json.loads(x)["text"] for x in p.read_text().splitlines() if x.strip()]
    config = json.loads((toy / "backdoor.json").read_text())["config"]
    sets.update(reply_sets(sets, config["triggers"], config["unseen_triggers"]))
    return sets


def _resid(model: Any, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, Any]:
    """Residual stream [layer+1 batch pos d] (the embedding first) and the logits."""
    n = model.dims.n_layers
    names = ["blocks.0.hook_resid_pre"] + [f"blocks.{L}.hook_resid_post" for L in range(n)]
    with torch.inference_mode():
        logits, cache = model.run_with_cache(tokens, names=names, attention_mask=mask)
    return torch.stack([cache[s] for s in names]), logits.float()


def _lens_logp(model: Any, resid: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Logit-lens log-probability [len(LENS) batch pos] of the actual next token (last pos: 0)."""
    out = torch.zeros((len(LENS), *resid.shape[1:3]))
    nxt = tokens[:, 1:]
    with torch.inference_mode():
        for i, L in enumerate(LENS):
            logp = model.unembed(model.final_norm(resid[L + 1])).float().log_softmax(-1)
            out[i, :, :-1] = logp[:, :-1].gather(-1, nxt[..., None])[..., 0]
    return out


def dump(args: argparse.Namespace, device: torch.device) -> None:
    sets = read_sets(args.toy)
    name = "smollm2-135m" if args.which == "clean" else str(args.toy / "model")
    model = mechscope.load(name, progress=False, device=device)
    out: dict[str, Any] = {"toy": str(args.toy), "which": args.which}
    names: tuple[str, ...] = REPLY
    if args.reuse is not None:  # same model, same trusted and clean sets: only the triggers
        old = torch.load(args.reuse)
        out.update({k: old[k] for k in ("fit", "held", "clean_reply")})
        names = REPLY[1:]
    elif not args.whole:
        fit, held = [], []
        seen = 0
        for batch in _trusted(sets, model, args.n_tokens):
            resid, _ = _resid(model, batch, torch.ones_like(batch))
            for j in range(batch.shape[0]):
                (held if seen % 5 == 4 else fit).append(resid[:, j, 1:].half())
                seen += 1
        out["fit"] = torch.cat(fit, 1)  # [layer+1 tokens d]
        out["held"] = torch.stack(held, 1)  # [layer+1 windows pos d]
    else:
        names = WHOLE
    pad = model.tokenizer.pad_token_id or 0
    for set_name in names:
        texts = sets[set_name][: args.n]
        rows_out: dict[int, Any] = {}
        for rows, tokens, mask in _batches(_tokenize(model, texts, 256), 8, pad):
            resid, logits = _resid(model, tokens, mask)
            logp = logits.log_softmax(-1)
            lens = _lens_logp(model, resid, tokens) if args.whole else None
            for j, r in enumerate(rows):
                n = int(mask[j].sum())
                if args.whole:
                    nll = -logp[j, : n - 1].gather(-1, tokens[j, 1:n, None])[..., 0]
                    ent = -(logp[j, 1:n].exp() * logp[j, 1:n]).sum(-1)
                    rows_out[r] = {
                        "resid": resid[[L + 1 for L in LENS], j, 1:n].half(),
                        "lens": lens[:, j, 1 : n - 1],  # position p predicts token p+1
                        "nll": nll,
                        "entropy": ent,
                    }
                else:
                    lp = logp[j, n - 1]
                    rows_out[r] = {
                        "resid": resid[:, j, n - 1].half(),
                        "confidence": float(lp.max().exp()),
                        "entropy": float(-(lp.exp() * lp).sum()),
                    }
        out[set_name] = [rows_out[i] for i in range(len(texts))]
    if args.whole:  # the trusted tokens' lens surprise, for fitting
        lens_fit, resid_fit = [], []
        for batch in _trusted(sets, model, args.n_tokens):
            resid, _ = _resid(model, batch, torch.ones_like(batch))
            lens_fit.append(_lens_logp(model, resid, batch)[:, :, 1:-1])
            resid_fit.append(resid[[L + 1 for L in LENS], :, 1:].half())
        out["fit_lens"] = torch.cat(lens_fit, 1)  # [layer+1 windows pos]
        out["fit_resid"] = torch.cat(resid_fit, 1)
    torch.save(out, args.out)


# -- analysis -------------------------------------------------------------------------------

KINDS = ("resid", "update", "update3", "normed")
RANGES = ((15, 29), (15, 22), (17, 22), (19, 29), (20, 29))
EPS = 1e-6  # as mechscope.anomaly.batch.LOG_EPS


def _vectors(resid: torch.Tensor, kind: str, layer: int) -> torch.Tensor:
    """``resid`` [layer+1 ... d] (0: the embedding, L+1: after block L) -> what a variant reads:
    the residual stream after block L, what block L writes (``update``), what blocks L-2..L
    write (``update3``), or the residual stream scaled to unit RMS (what the final norm sees)."""
    x = resid[layer + 1].float()
    if kind == "update":
        return x - resid[layer].float()
    if kind == "update3":
        return x - resid[layer - 2].float()
    if kind == "normed":
        return x / x.norm(dim=-1, keepdim=True) * x.shape[-1] ** 0.5
    return x


def variant_scores(path: Path, layers: range = range(15, 30)) -> dict[str, dict[str, list]]:
    """Per variant, per reply set, the input scores: every kind at every layer as the layer's
    standardised log Mahalanobis score ``z`` (Ledoit-Wolf, fitted on the dump's fitting tokens,
    standardised on its held-out tokens, as ``anomaly fit`` does), layer ranges combined by the
    largest or the mean ``z``, and the black-box confidence."""
    d = torch.load(path)
    held = d["held"].flatten(1, 2)
    sets = {s: torch.stack([r["resid"] for r in d[s]], 1) for s in REPLY}
    out: dict[str, dict[str, list]] = {
        "confidence": {s: [r["confidence"] for r in d[s]] for s in REPLY}
    }
    for kind in KINDS:
        for L in layers:
            stats = MahalanobisStats()
            stats.update(_vectors(d["fit"], kind, L))
            t = fit_tensors(stats)
            h = torch.log(mahalanobis(t, _vectors(held, kind, L)) + EPS).double()
            mu, sd = float(h.mean()), float(h.std())
            out[f"{kind}/{L}"] = {
                s: ((torch.log(mahalanobis(t, _vectors(x, kind, L)) + EPS) - mu) / sd).tolist()
                for s, x in sets.items()
            }
        for lo, hi in RANGES:
            z = {s: torch.tensor([out[f"{kind}/{L}"][s] for L in range(lo, hi + 1)]) for s in REPLY}
            out[f"{kind}/{lo}-{hi}/max"] = {s: v.max(0).values.tolist() for s, v in z.items()}
            out[f"{kind}/{lo}-{hi}/mean"] = {s: v.mean(0).tolist() for s, v in z.items()}
    return out


def analyze(paths: list[Path]) -> dict[str, dict[str, list[dict[str, float]]]]:
    """Per dump, per variant: AUROC, AP, FPR at 95% recall of the trigger and the unseen trigger
    against the clean reply prompts."""
    out = {}
    for path in paths:
        rows = {}
        for name, sc in variant_scores(path).items():
            neg = sc["clean_reply"]
            rows[name] = [separation(sc[s], neg).to_dict() for s in REPLY[1:]]
        out[path.stem] = rows
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dump", dest="which", choices=["backdoored", "clean"])
    parser.add_argument("--analyze", nargs="+", type=Path, help="dumps to compare variants on")
    parser.add_argument("--json", type=Path, help="--analyze: write the rows here")
    parser.add_argument("--toy", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--whole", action="store_true")
    parser.add_argument(
        "--reuse",
        type=Path,
        help="a dump of the same model with the same trusted and clean sets: copy those",
    )
    parser.add_argument("--n", type=int, default=100, help="inputs per set")
    parser.add_argument("--n-tokens", type=int, default=8192, help="trusted tokens")
    parser.add_argument("--threads", type=int, default=1)
    add_device_option(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.analyze:
        rows = analyze(args.analyze)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
        for stem, per in rows.items():
            print(stem)
            for name, (trig, unseen) in per.items():
                print(f"  {name:22s} {trig['auroc']:.3f} | {unseen['auroc']:.3f}")
        return
    dump(args, pick_device(args.device))


if __name__ == "__main__":
    main()
