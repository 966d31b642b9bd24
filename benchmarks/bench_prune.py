"""Structured pruning of SmolLM2-135M-Instruct: circuit importance against every baseline ranking.

The issue's "optional structured pruning of heads and neurons, respecting GQA", measured alone
(the shipped weights, no quantization): at each level every method removes the same number of
units, so the same number of weights, and only the choice differs. Structures:

- ``neurons``: 10 / 20 / 30% of the 46,080 MLP neurons (a neuron: its gate and up rows and its
  down column, 3 x 576 weights);
- ``gqa``: 10 / 20 / 30% of the 90 key/value groups (a key/value head with its three query heads:
  their q, k, v rows and o columns, 294,912 weights);
- ``query``: 10 / 20 / 30% of the 270 query heads (q rows and o columns, 73,728 weights); a
  key/value head goes only when all three of its query heads do (counted when it happens).

Pruning zeroes the units' weights (``compress.prune.zero_units``, tested equal to zeroing the
head's ``attn.hook_z`` slice or the neuron's ``mlp.hook_post`` in a hook). Unit scores (lowest
pruned), all from data disjoint from the evaluation (seed 0 prompts, the corpus's train split):

- ``circuit (gradient)``: ``F_lm + w * (F_ioi + F_induction)``, each the Fisher of the unit's mask
  ``sum_examples (sum_pos dv/da . a)^2`` (``compress.prune.removal_effects``; IOI: each prompt's
  logit difference; induction: each sequence's loss on the second copy; LM: each 128-token
  window's loss), each normalised to mean 1 over the units; ``w`` = 1 (the CLI's default weight
  for ``--importance gradient``); for a GQA group the effects of its three heads are summed per
  example before squaring;
- ``circuit (eap-ig)``: ``F_lm`` + the EAP-IG node scores of IOI and induction as ``mechscope
  compress`` maps them to q rows and gate rows (read from bench_compress.py's cache, ``--prep``);
- ``fisher``: ``F_lm`` alone (the same estimate with the LM loss: Kwon et al. 2022's mask Fisher);
- ``magnitude``: the L2 norm of the unit's weights;
- ``activation``: the mean squared write of the unit into the residual stream on calibration text
  (``a^2 |W_down[:, n]|^2``, ``|W_O,h z_h|^2``; Wanda-like);
- ``random``: 5 seeds.

Evaluation (bench_compress.py's sets): IOI logit difference (32 prompts, seed 1), induction loss
(24 sequences, seed 1), greater-than / subject-verb agreement / capitals (24 each, never used for
importance) and held-out LM loss (8 windows of 128 test-split tokens); paired bootstrap intervals
(2,000 resamples) of circuit minus each baseline over prompts. Results: ``OUT/results.jsonl``
(resumable), ``OUT/table.md``, ``OUT/prune.png``; CPU seconds per run (process + children).

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_prune.py [--out DIR] [--device cpu]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

import mechscope
from bench_compress import append, calib_prompts, check_disjoint, done_keys, eval_sets, measure
from compress_report import ci, cpu_seconds, fmt, md
from machine import add_device_option, device_label, pick_device
from mechscope.compress.api import CompressConfig, calibration
from mechscope.compress.groups import linear_weights
from mechscope.compress.prune import removal_effects, select_units, zero_units
from mechscope.tasks.metrics import logit_diff

LEVELS = (0.1, 0.2, 0.3)
STRUCTURES = ("neurons", "gqa", "query")
METHODS = ("circuit (gradient)", "circuit (eap-ig)", "fisher", "magnitude", "activation")
N_RANDOM = 3  # 5 at the first level (neurons 10%), run before the cut for time
TASKS = ("ioi", "induction", "greater_than", "sva", "capitals", "lm")


def log(*a: object) -> None:
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


def effects(model, args) -> dict:  # type: ignore[no-untyped-def]
    """Per-example removal effects of every head and neuron on LM windows, IOI prompts and
    induction sequences (seed 0 / train split), and each unit's mean squared write."""
    cfg = CompressConfig(bits=16, method="awq", calib_tokens=args.calib_tokens)
    calib = calibration(model, cfg, split="train")
    prompts = calib_prompts(model, args)
    ioi, rep = prompts["ioi"], prompts["induction"]

    def lm_run(tokens):  # type: ignore[no-untyped-def]
        def run() -> torch.Tensor:
            logits = model.forward(tokens).float()
            ce = torch.nn.functional.cross_entropy(
                logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none"
            )
            return ce.mean(1)

        return run

    out = {"lm": removal_effects(model, [lm_run(t) for t in calib])}
    out["ioi"] = removal_effects(
        model, [lambda: logit_diff(model.forward(ioi.clean_tokens, ioi.clean_mask), ioi)]
    )
    out["induction"] = removal_effects(model, [lambda: rep.losses(model.forward(rep.tokens))])
    out["write"] = writes(model, calib)
    return out


@torch.no_grad()
def writes(model, calib: list) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[no-untyped-def]
    """(heads [layer head], neurons [layer d_mlp]): mean squared norm of each unit's write."""
    d, layout = model.dims, linear_weights(model)
    by = {(w.layer, w.kind): model.hf.get_parameter(w.name) for w in layout.weights}
    heads = torch.zeros(d.n_layers, d.n_heads)
    neurons = torch.zeros(d.n_layers, d.d_mlp)
    n = 0

    def z_hook(z: torch.Tensor, hook) -> None:  # type: ignore[no-untyped-def]
        layer = int(hook.name.split(".")[1])
        w_o = by[layer, "o"].float().view(d.d_model, d.n_heads, d.d_head)
        heads[layer] += torch.einsum("bphd,mhd->bphm", z.float(), w_o).square().sum((0, 1, 3))

    def post_hook(a: torch.Tensor, hook) -> None:  # type: ignore[no-untyped-def]
        layer = int(hook.name.split(".")[1])
        col = by[layer, "down"].float().square().sum(0)
        neurons[layer] += a.float().square().sum((0, 1)) * col

    with model.hooks(fwd=[("blocks.*.attn.hook_z", z_hook), ("blocks.*.mlp.hook_post", post_hook)]):
        for tokens in calib:
            model.forward(tokens)
            n += tokens.numel()
    return heads / n, neurons / n


def eap_ig_units(model, prep_path: Path) -> tuple[torch.Tensor, torch.Tensor] | None:  # type: ignore[no-untyped-def]
    """EAP-IG importance of IOI + induction per query head and neuron, as the compress cache maps
    it to q rows (head write + query port) and gate rows (the neuron's share of its MLP)."""
    if not prep_path.exists():
        return None
    task = torch.load(prep_path, weights_only=True)["task"]["ioi+induction"]
    d, layout = model.dims, linear_weights(model)
    heads = torch.zeros(d.n_layers, d.n_heads)
    neurons = torch.zeros(d.n_layers, d.d_mlp)
    for w in layout.weights:
        rows = task[w.offset : w.offset + w.n_groups].view(w.out_features, -1)[:, 0]
        if w.kind == "q":
            heads[w.layer] = rows[:: d.d_head]
        elif w.kind == "gate":
            neurons[w.layer] = rows
    return heads, neurons


def norm1(x: torch.Tensor) -> torch.Tensor:
    return x / x.mean().clamp_min(1e-30)


def fisher(eff: torch.Tensor, n_kv: int, gqa: bool) -> torch.Tensor:
    """sum over examples of the squared effect; heads summed per GQA group first if ``gqa``."""
    if gqa:
        eff = eff.view(*eff.shape[:2], n_kv, -1).sum(-1)
    return eff.double().square().sum(0)


def scores(model, eff: dict, eap: tuple | None, method: str, gqa: bool, seed: int = 0):  # type: ignore[no-untyped-def]
    """(head scores [layer head or kv], neuron scores [layer d_mlp]) of a method; low = pruned."""
    d = model.dims
    kv, rep = d.n_kv_heads, d.n_heads // d.n_kv_heads

    def group(h: torch.Tensor) -> torch.Tensor:
        return h.view(d.n_layers, kv, rep).sum(-1) if gqa else h

    lm_h, lm_n = fisher(eff["lm"][0], kv, gqa), fisher(eff["lm"][1], kv, False)
    if method == "fisher":
        return lm_h, lm_n
    if method == "circuit (gradient)":
        t_h = sum(norm1(fisher(eff[t][0], kv, gqa)) for t in ("ioi", "induction"))
        t_n = sum(norm1(fisher(eff[t][1], kv, False)) for t in ("ioi", "induction"))
        return norm1(lm_h) + t_h, norm1(lm_n) + t_n
    if method == "circuit (eap-ig)":
        assert eap is not None
        return norm1(lm_h) + norm1(group(eap[0]).double()), norm1(lm_n) + norm1(eap[1].double())
    if method == "activation":
        return group(eff["write"][0]), eff["write"][1]
    if method == "magnitude":
        return magnitude(model, gqa)
    if method == "random":
        g = torch.Generator().manual_seed(seed)
        return torch.rand(d.n_layers, kv if gqa else d.n_heads, generator=g), torch.rand(
            d.n_layers, d.d_mlp, generator=g
        )
    raise ValueError(method)


@torch.no_grad()
def magnitude(model, gqa: bool) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[no-untyped-def]
    """L2 norm of each unit's weights (a GQA group: its query heads' and its k and v rows)."""
    d, layout = model.dims, linear_weights(model)
    by = {(w.layer, w.kind): model.hf.get_parameter(w.name).float() for w in layout.weights}
    heads, neurons = [], []
    for layer in range(d.n_layers):
        q = by[layer, "q"].square().view(d.n_heads, -1).sum(1)
        o = by[layer, "o"].square().view(d.d_model, d.n_heads, d.d_head).sum((0, 2))
        h = q + o
        if gqa:
            kvw = by[layer, "k"].square().view(d.n_kv_heads, -1).sum(1)
            kvw += by[layer, "v"].square().view(d.n_kv_heads, -1).sum(1)
            h = h.view(d.n_kv_heads, -1).sum(1) + kvw
        heads.append(h.sqrt())
        n = by[layer, "gate"].square().sum(1) + by[layer, "up"].square().sum(1)
        neurons.append((n + by[layer, "down"].square().sum(0)).sqrt())
    return torch.stack(heads), torch.stack(neurons)


def jobs() -> list[dict]:
    out = []
    for structure in STRUCTURES:
        for level in LEVELS:
            for m in METHODS:
                out.append({"structure": structure, "level": level, "method": m, "seed": 0})
            for s in range(N_RANDOM):
                out.append({"structure": structure, "level": level, "method": "random", "seed": s})
    for j in out:
        j["key"] = f"{j['structure']}/{j['level']}/{j['method']}/{j['seed']}"
    return out


def run_job(model, layout, eff, eap, job: dict, originals: dict, sets: dict) -> dict:  # type: ignore[no-untyped-def]
    wall, cpu = time.perf_counter(), cpu_seconds()
    d = model.dims
    gqa = job["structure"] == "gqa"
    h, n = scores(model, eff, eap, job["method"], gqa, job["seed"])
    n_units = d.n_layers * (d.n_kv_heads if gqa else d.n_heads)
    k_heads = 0 if job["structure"] == "neurons" else round(job["level"] * n_units)
    k_neurons = round(job["level"] * d.n_layers * d.d_mlp) if job["structure"] == "neurons" else 0
    units = select_units(h, n, d.n_heads, d.n_kv_heads, k_heads, k_neurons, gqa=gqa)
    zero_units(model, layout, units)
    values = measure(model, sets)
    with torch.no_grad():
        for name, w in originals.items():
            model.hf.get_parameter(name).copy_(w)
    return {**job, "values": values, "params": units.params(d.d_model, d.d_head),
            "share": units.params(d.d_model, d.d_head) / layout.numel,
            "heads": int(units.heads.sum()), "kv": int(units.kv.sum()),
            "neurons": int(units.neurons.sum()),
            "seconds": round(time.perf_counter() - wall, 1),
            "cpu_seconds": round(cpu_seconds() - cpu, 1)}  # fmt: skip


def merged(rows: dict) -> dict:
    """{(structure, level, method): {task: per-prompt values (random: mean over seeds), ...}}"""
    groups: dict = {}
    for r in rows.values():
        if r.get("structure"):
            groups.setdefault((r["structure"], r["level"], r["method"]), []).append(r)
    out = {}
    for key, runs in groups.items():
        v = {t: np.mean([np.asarray(r["values"][t]) for r in runs], axis=0) for t in TASKS}
        v["_share"] = float(np.mean([r["share"] for r in runs]))
        v["_n"] = len(runs)
        v["_cpu"] = float(np.mean([r.get("cpu_seconds", np.nan) for r in runs]))
        v["_kv"] = float(np.mean([r["kv"] for r in runs]))
        v["_seeds"] = {t: [float(np.mean(r["values"][t])) for r in runs] for t in TASKS}
        out[key] = v
    return out


def report(rows: dict, out: Path, device: str) -> None:
    g = merged(rows)
    shipped = rows.get("shipped")
    text = [f"device {device}"]
    header = ["level", "method", "weights removed", "IOI logit diff", "induction loss",
              "greater-than LD", "SVA LD", "capitals LD", "held-out LM loss", "CPU s/run"]  # fmt: skip
    names = [*METHODS, "random"]
    for structure in STRUCTURES:
        body, paired = [], []
        if shipped:
            v = {t: np.asarray(shipped["values"][t]) for t in TASKS}
            body.append(["0", "as shipped", "0"]
                        + [fmt(ci(v[t]), 3 if t == "lm" else 2) for t in TASKS] + [""])  # fmt: skip
        for level in LEVELS:
            for m in names:
                v = g.get((structure, level, m))
                if v is None:
                    continue
                label = m
                if m == "random":  # intervals over prompts of the seed-averaged values
                    sm = v["_seeds"]
                    label = (f"random ({v['_n']} seeds; seed means IOI {min(sm['ioi']):.2f} to "
                             f"{max(sm['ioi']):.2f}, induction {min(sm['induction']):.2f} to "
                             f"{max(sm['induction']):.2f})")  # fmt: skip
                kv = f", {v['_kv']:.1f} kv heads" if structure == "query" else ""
                body.append([f"{level:.0%}", label, f"{100 * v['_share']:.2f}%{kv}"]
                            + [fmt(ci(v[t]), 3 if t == "lm" else 2) for t in TASKS]
                            + [f"{v['_cpu']:.0f}"])  # fmt: skip
            for main in ("circuit (gradient)", "circuit (eap-ig)"):
                c = g.get((structure, level, main))
                if c is None:
                    continue
                for m in names:
                    b = g.get((structure, level, m))
                    if b is None or m == main or (main == "circuit (eap-ig)" and "circuit" in m):
                        continue
                    apart = (
                        ci(c["ioi"])[1] > ci(b["ioi"])[2]
                        and ci(c["induction"])[2] < ci(b["induction"])[1]
                    )
                    d_ioi, d_ind = ci(c["ioi"] - b["ioi"]), ci(b["induction"] - c["induction"])
                    ok = d_ioi[1] > 0 and d_ind[1] > 0
                    paired.append([f"{level:.0%}", main, m, fmt(d_ioi), fmt(d_ind),
                                   fmt(ci(b["lm"] - c["lm"], seed=1), 3),
                                   "yes" if ok and apart else ("paired only" if ok else "no")])  # fmt: skip
        text += [f"\n### {structure}\n", md(header, body), "",
                 md(["level", "circuit", "baseline", "IOI: circuit - baseline",
                     "induction: baseline - circuit", "LM: baseline - circuit",
                     "ahead on both (paired CI > 0; CIs apart)"], paired)]  # fmt: skip
    body = "\n".join(text)
    print(body)
    (out / "table.md").write_text(body + "\n")
    figure(g, shipped, out / "prune.png")


def figure(g: dict, shipped: dict | None, path: Path) -> None:
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    from mechscope.viz import save_png

    panels = [("ioi", "IOI logit difference (higher better)"),
              ("induction", "induction loss (lower better)"),
              ("lm", "held-out LM loss (lower better)")]  # fmt: skip
    titles = {"neurons": "MLP neurons", "gqa": "whole GQA groups (kv head + 3 query heads)",
              "query": "query heads (kv head only with all three)"}  # fmt: skip
    fig = Figure(figsize=(16, 12))
    axes = fig.subplots(len(STRUCTURES), len(panels), squeeze=False)
    colors = colormaps["tab10"]
    for r, structure in enumerate(STRUCTURES):
        for c, (task, label) in enumerate(panels):
            ax = axes[r][c]
            for i, m in enumerate([*METHODS, "random"]):
                pts = []
                for level in LEVELS:
                    v = g.get((structure, level, m))
                    if v is not None:
                        mean, lo, hi = ci(v[task])
                        pts.append((100 * v["_share"], mean, (hi - lo) / 2))
                if pts:
                    x, y, e = zip(*pts, strict=True)
                    ax.errorbar(x, y, yerr=e, marker="osD^v<"[i % 6], ms=4, capsize=3, lw=1.3,
                                color=colors(i), label=m, zorder=3 if "circuit" in m else 2)  # fmt: skip
            if shipped:
                ax.axhline(float(np.mean(shipped["values"][task])), ls="--", c="gray", lw=1,
                           label="as shipped")  # fmt: skip
            ax.set_title(titles[structure], fontsize=9)
            ax.set_xlabel("% of decoder-layer Linear weights removed")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="upper center", ncol=7)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    save_png(fig, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="benchmarks/out/prune")
    p.add_argument("--prep", default="benchmarks/out/compress/prep.pt",
                   help="bench_compress.py's cache holding the EAP-IG importance (optional)")  # fmt: skip
    p.add_argument("--ioi-prompts", type=int, default=32)
    p.add_argument("--prompts", type=int, default=24, help="induction and held-out tasks")
    p.add_argument("--imp-prompts", type=int, default=16, help="importance prompts per task")
    p.add_argument("--calib-tokens", type=int, default=4096)
    p.add_argument("--lm-tokens", type=int, default=1024)
    p.add_argument("--report-only", action="store_true")
    add_device_option(p)
    args = p.parse_args()
    device = pick_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    if not args.report_only:
        torch.manual_seed(0)
        model = mechscope.load("smollm2-135m", device=device, progress=False)
        layout = linear_weights(model)
        originals = {w.name: model.hf.get_parameter(w.name).detach().clone()
                     for w in layout.weights}  # fmt: skip
        sets = eval_sets(model, args.ioi_prompts, args.prompts, args.lm_tokens)
        check_disjoint(calib_prompts(model, args), sets)
        if "shipped" not in done_keys(results):
            append(results, {"key": "shipped", "values": measure(model, sets)})
        cache = out / "effects.pt"
        if cache.exists():
            eff = torch.load(cache, weights_only=True)
        else:
            cpu = cpu_seconds()
            eff = effects(model, args)
            torch.save(eff, cache)
            log(f"removal effects and writes: {cpu_seconds() - cpu:.0f} CPU-s")
        eap = eap_ig_units(model, Path(args.prep))
        for job in jobs():
            if job["key"] in done_keys(results) or (job["method"] == "circuit (eap-ig)"
                                                    and eap is None):  # fmt: skip
                continue
            row = run_job(model, layout, eff, eap, job, originals, sets)
            append(results, row)
            v = row["values"]
            log(job["key"], f"share {row['share']:.3f}", f"ioi {np.mean(v['ioi']):.2f}",
                f"ind {np.mean(v['induction']):.2f}", f"lm {np.mean(v['lm']):.3f}",
                f"{row['cpu_seconds']} CPU-s")  # fmt: skip
    report(done_keys(results), out, device_label(device))


if __name__ == "__main__":
    main()
