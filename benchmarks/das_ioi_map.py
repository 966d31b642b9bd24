"""The IOI-swap IIA map on SmolLM2-135M: full swap, fixed difference PCA and trained DAS by layer
and named position, as one figure (docs/figures/das_ioi_map.png) and page.

    python benchmarks/das_ioi_map.py --full FULL.json --pca PCA.json [--cache DIR] --out PREFIX

``FULL.json`` and ``PCA.json`` are ``mechscope das --method full`` / ``--method pca`` outputs of
the same grid (``--task ioi-swap --n 256 --positions IO,S1,S2,S2+1,last``); the DAS panel holds,
for each row's layer, the DAS basis that ``bench_das_ioi.py`` trained and cached at the last
position (``das_ioi_L{L}_k{k}_s{steps}_b{batch}_lr{lr}_n{n}_seed{seed}.pt`` in ``--cache``),
evaluated here on the same held-out pairs (cells without a trained basis are left blank).
``--joint S2,last --joint-from 18`` adds the full swap of those positions together at each
layer from 18 on (in the JSON and the printout): whether the variable is split between them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mechscope  # noqa: E402
from machine import add_device_option, machine, pick_device  # noqa: E402
from mechscope.causal import from_task  # noqa: E402
from mechscope.causal.das import DASResult, iia  # noqa: E402
from mechscope.tasks import load_task  # noqa: E402
from mechscope.viz.causal import iia_figure, iia_page, layer_labels  # noqa: E402
from mechscope.viz.html import save_png  # noqa: E402


def das_panel(model, test, grid: dict, args) -> dict:
    """The DAS map of ``grid``'s shape: cached last-position bases evaluated on ``test``."""
    values = np.full((len(grid["sites"]), len(grid["positions"])), np.nan)
    results = []
    col = grid["positions"].index("last")
    for row, site in enumerate(grid["sites"]):
        layer = int(site.split(".")[1])
        key = (f"das_ioi_L{layer}_k{args.k}_s{args.steps}_b{args.batch}_lr{args.lr:g}_n{args.n}"
               f"_seed{args.seed}.pt")  # fmt: skip
        path = Path(args.cache) / key
        if not path.is_file():
            continue
        basis = torch.load(path)
        correct = iia(model, test, site, "last", basis)
        values[row, col] = float(correct.float().mean())
        results.append(DASResult(site, "last", basis.shape[1], basis, None,
                                 values[row, col], correct).to_dict())  # fmt: skip
    return {"sites": grid["sites"], "positions": grid["positions"], "iia": values,
            "results": results}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", required=True)
    parser.add_argument("--pca", required=True)
    parser.add_argument("--cache", default="/work/cache/causal")
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-2)
    parser.add_argument("--out", required=True, help="writes OUT.png, OUT.html and OUT.json")
    parser.add_argument("--joint", default="", help="positions swapped together, e.g. S2,last")
    parser.add_argument("--joint-from", type=int, default=0, help="first layer of --joint")
    add_device_option(parser)
    args = parser.parse_args()
    device = pick_device(args.device)
    if device.type != "cpu":
        raise SystemExit("error: this script runs on the CPU only for now; use --device cpu")
    torch.set_num_threads(1)
    full, pca = (json.loads(Path(p).read_text()) for p in (args.full, args.pca))
    if (full["sites"], full["positions"]) != (pca["sites"], pca["positions"]):
        raise SystemExit("error: --full and --pca must cover the same sites and positions")
    args.n, args.seed = full["n"], full["seed"]
    model = mechscope.load(full["model"], progress=False)
    pairs = from_task(load_task(full["task"], model, n=args.n, seed=args.seed), model)
    _, test = pairs.split(0.25, args.seed)
    cpu = time.process_time()
    das = das_panel(model, test, full, args)
    print(f"DAS cells evaluated in {time.process_time() - cpu:.1f} CPU-s")
    maps = {"full swap": full, f"difference PCA, k={args.k}": pca,
            f"DAS, k={args.k}": das}  # fmt: skip
    rows, cols = layer_labels(full["sites"]), [str(p) for p in full["positions"]]
    title = f"IOI-swap on {full['model']}: held-out IIA ({len(test)} pairs)"
    panels = [(name, np.asarray(m["iia"], dtype=float)) for name, m in maps.items()]
    save_png(iia_figure(panels, rows, cols, title=title), f"{args.out}.png")
    Path(f"{args.out}.html").write_text(iia_page(title, maps, subtitle=machine(device)))
    das_json = {**das, "iia": [[None if np.isnan(v) else v for v in r] for r in das["iia"]]}
    out = {"machine": machine(device), "full": full["iia"], "pca": pca["iia"], "das": das_json}
    if args.joint:
        names, out["joint"] = args.joint.split(","), {}
        for site in full["sites"]:
            if int(site.split(".")[1]) >= args.joint_from:
                correct = iia(model, test, site, names, None)
                out["joint"][site] = DASResult(site, names, model.dims.d_model, None, None,
                                               float(correct.float().mean()), correct).to_dict()  # fmt: skip
                r = out["joint"][site]
                print(f"full swap of {args.joint} together, {site}: IIA {r['test_iia']:.3f} "
                      f"[{r['test_iia_ci'][0]:.3f}, {r['test_iia_ci'][1]:.3f}]")  # fmt: skip
    Path(f"{args.out}.json").write_text(json.dumps(out, indent=1))
    header = "".join(f"{c:>7s}" for c in cols)
    for name, values in panels:
        print(f"{name}\n       {header}")
        for label, row in zip(rows, values):
            print(f"  {label:5s}" + "".join(f"{v:7.3f}" for v in row))


if __name__ == "__main__":
    main()
