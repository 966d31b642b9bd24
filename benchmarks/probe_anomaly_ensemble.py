"""Ways of combining `update` (layer 19) and `confidence` at the reply position, from one fit.

One run per model keeps every reply prompt's input score of both members and of the shipped
ensemble, and the held-out trusted inputs' scores; the analysis then compares, per planting and
on its clean-model control, each member alone, the shipped two-sided Gaussian, the sum of the
standardised scores (``--ensemble-combine sum``) and their maximum (docs/anomaly.md, "Fresh
plantings, ensembles, attention profiles, and where the backdoor runs").

    python benchmarks/probe_anomaly_ensemble.py --dump backdoored|clean --toy TOY --out F.json
    python benchmarks/probe_anomaly_ensemble.py --analyze NAME=B.json,C.json [NAME=...]

Fits on 32,768 trusted tokens (48-token windows) and scores 100 prompts per reply set, as
``bench_anomaly.py --reply --aggregate last --layers 19 --n 100 --n-tokens 32768`` does (the
member and Gaussian scores are the same numbers); ~85 CPU-s per run on SmolLM2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

import mechscope
from mechscope.anomaly import FitConfig, fit_detector, layer_scores
from mechscope.anomaly.metrics import separation
from mechscope.corpus import Corpus

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import add_device_option, pick_device  # noqa: E402
from probe_anomaly_holdout import REPLY, read_sets  # noqa: E402

MEMBERS = ("update", "confidence")


def dump(args: argparse.Namespace) -> None:
    sets = read_sets(args.toy)
    name = "smollm2-135m" if args.dump == "clean" else str(args.toy / "model")
    model = mechscope.load(name, progress=False, device=pick_device(args.device))
    cfg = FitConfig(kinds=MEMBERS, layers=(19,), aggregate="last", seq_len=48, n_tokens=32768,
                    batch_size=8, ensemble=MEMBERS)  # fmt: skip
    det = fit_detector(model, Corpus.from_texts(sets["trusted"]), cfg, quiet=True)
    kinds = (*MEMBERS, "ensemble")
    out: dict[str, Any] = {"held": {k: det.calibration[k]["scores"] for k in kinds}}
    for s in REPLY:
        scores = layer_scores(det, model, sets[s][: args.n], quiet=True)
        out[s] = {k: scores[k]["all"] for k in kinds}
    args.out.write_text(json.dumps(out))


def _values(kind: str, x: Any) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if kind == "confidence":
        x = np.clip(x, 1e-6, 1 - 1e-6)
        return np.log(x / (1 - x))
    return x


def combinations(d: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """AUROC trigger / unseen trigger of each way of scoring."""
    held = {k: _values(k, d["held"][k]) for k in MEMBERS}

    def z(s: str, k: str) -> np.ndarray:
        return (_values(k, d[s][k]) - held[k].mean()) / held[k].std(ddof=1)

    ways = {
        "update L19": lambda s: z(s, "update"),
        "confidence": lambda s: z(s, "confidence"),
        "Gaussian (shipped default)": lambda s: np.asarray(d[s]["ensemble"]),
        "sum of standardised scores": lambda s: z(s, "update") + z(s, "confidence"),
        "max of standardised scores": lambda s: np.maximum(z(s, "update"), z(s, "confidence")),
    }
    out = {}
    for name, fn in ways.items():
        neg = fn("clean_reply")
        out[name] = (
            separation(fn("trigger_reply"), neg).auroc,
            separation(fn("unseen_trigger_reply"), neg).auroc,
        )
    return out


def analyze(specs: list[str]) -> None:
    table: dict[str, list[str]] = {}
    names = []
    for spec in specs:
        name, _, files = spec.partition("=")
        bad_path, clean_path = files.split(",")
        bad = combinations(json.loads(Path(bad_path).read_text()))
        clean = combinations(json.loads(Path(clean_path).read_text()))
        names.append(name)
        for way, (t, u) in bad.items():
            ct, cu = clean[way]
            table.setdefault(way, []).append(f"{t:.3f} / {u:.3f} ({ct:.2f} / {cu:.2f})")
    print("AUROC trigger / unseen trigger, clean model in brackets")
    print()
    print("| score | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for way, cells in table.items():
        print(f"| {way} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dump", choices=["backdoored", "clean"])
    parser.add_argument("--toy", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--n", type=int, default=100, help="prompts per reply set")
    parser.add_argument("--analyze", nargs="+", help="NAME=BACKDOORED.json,CLEAN.json ...")
    add_device_option(parser)
    args = parser.parse_args()
    if args.analyze:
        analyze(args.analyze)
        return
    if args.dump is None or args.toy is None or args.out is None:
        parser.error("--dump needs --toy and --out")
    dump(args)


if __name__ == "__main__":
    main()
