"""The finetune-only crosscoder latent on the narrow tiny truth (docs/diff.md, "Figures: a
finetune-only latent on the narrow tiny truth"), against the control finetune of the same run.

For each seed: the narrow truth of the tests (``tests/compare/diff_truth.narrow_truth``: a tiny
Llama, its narrow finetune taught "<z-word> pim pam pum" at the MLPs of layers 0 and 1, and the
control finetune), with ``--eval-docs`` held-out documents; then an ``l1`` crosscoder
(``train_crosscoder``) over base and planted and over base and control at each ``--sites`` hook
of layer 1, read on every document of ``eval.jsonl`` against the trigger words
(``evaluate_crosscoder``). Printed per seed and site: the finetune-only band's size (planted /
control), the best finetune-only latent that latent scaling confirms (``|nu_eps|`` < 0.3, recall >
0.5; highest AUROC) with its relative norm, ``nu_r``, ``nu_eps``, recall, precision, strong
precision / recall and AUROC, the control's largest relative norm, and CPU seconds.

    python benchmarks/bench_diff_narrow_tiny.py --seeds 0,1,2 --sites hook_resid_post,hook_mlp_out
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from pathlib import Path
from typing import Any

import torch

from machine import add_device_option, machine, pick_device
from mechscope.corpus import from_files
from mechscope.diff.crosscoder_train import evaluate_crosscoder, train_crosscoder
from mechscope.toys.finetune import FinetuneConfig, trigger_spans

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "compare"))
from diff_truth import TINY_PLANT, narrow_truth  # noqa: E402  (the tests' ground truth)

FT = {"steps": 300, "words": 12, "seq_len": 32, "layers": (0, 1), "rank": 4, "leak": 3.0}
CC = {"variant": "l1", "layer": 1, "expansion": 4, "k": 8, "n_tokens": 30_000}
CC |= {"batch_size": 256, "seq_len": 32, "steps": 1000, "lr": 3e-3}


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def best_latent(report: dict[str, Any]) -> dict[str, Any] | None:
    found = [
        r for r in report["finetune_only"] if abs(r["nu_eps"]) < 0.3 and r.get("recall", 0) > 0.5
    ]
    return max(found, key=lambda r: r["auroc"]) if found else None


def run_seed(seed: int, args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    import mechscope

    folder = Path(args.cache) / f"seed{seed}"
    cpu0 = cpu_seconds()
    if not (folder / "control" / "finetune.json").is_file():
        cfg = FinetuneConfig.narrow(**FT, eval_docs=args.eval_docs, seed=seed)
        narrow_truth(folder, cfg)
    truth_cpu = cpu_seconds() - cpu0
    models = {
        k: mechscope.load(str(folder / k), progress=False, device=str(device))
        for k in ("base", "planted", "control")
    }
    corpus = from_files(folder / "planted" / "eval.jsonl")
    spans = {i: trigger_spans(t, TINY_PLANT) for i, t in enumerate(corpus.documents("all"))}
    rows = []
    for site in args.sites.split(","):
        reports = {}
        for kind in ("planted", "control"):
            cpu1 = cpu_seconds()
            out = folder / f"cc-{site}-{kind}"
            base, ft = models["base"], models[kind]
            sae, info, _ = train_crosscoder(
                base, ft, out, site=site, corpus=corpus, seed=seed, quiet=True, **CC
            )
            kw = {"spans": spans, "seq_len": 32, "split": "all", "n_tokens": 60_000, "top": 50}
            reports[kind] = evaluate_crosscoder(sae, info, base, ft, corpus, **kw)
            reports[kind]["cpu_s"] = cpu_seconds() - cpu1
        planted, control = reports["planted"], reports["control"]
        rows.append(
            {
                "seed": seed,
                "site": info.hook_name,
                "band": [planted["bands"]["finetune-only"], control["bands"]["finetune-only"]],
                "best": best_latent(planted),
                "control_best": best_latent(control),
                "control_max": max(
                    (r["delta"] for r in control["most_finetune"]), default=None
                ),  # live
                "triggers": planted["planted_tokens"],
                "tokens": planted["n_tokens"],
                "cpu_s": [round(truth_cpu), round(planted["cpu_s"]), round(control["cpu_s"])],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--sites", default="hook_resid_post,hook_mlp_out")
    parser.add_argument("--eval-docs", type=int, default=1000)
    parser.add_argument("--cache", default="/tmp/mechscope-diff-narrow-tiny")
    add_device_option(parser)
    args = parser.parse_args()
    torch.set_num_threads(1)
    device = pick_device(args.device)
    print(machine(device))
    rows = [row for s in args.seeds.split(",") for row in run_seed(int(s), args, device)]
    print("seed | site | band planted/control | delta | nu_r | nu_eps | recall | precision |")
    print("     strong p/r | AUROC | control max | CPU-s truth/planted/control")
    for r in rows:
        b = r["best"] or {}

        def fmt(key: str, b: dict = b) -> str:
            return f"{b[key]:.3f}" if key in b else "-"

        strong = f"{fmt('strong_precision')}/{fmt('strong_recall')}"
        print(
            f"{r['seed']} | {r['site']} | {r['band'][0]}/{r['band'][1]} | {fmt('delta')} | "
            f"{fmt('nu_r')} | {fmt('nu_eps')} | {fmt('recall')} | {fmt('precision')} | {strong} | "
            f"{fmt('auroc')} | {r['control_max']} | {r['cpu_s']}"
        )


if __name__ == "__main__":
    main()
