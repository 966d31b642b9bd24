"""Circuit-guided compression of SmolLM2-135M-Instruct against every baseline allocator.

At each budget (effective bits per decoder-layer Linear weight, 16-bit scale and zero per group of
64 included; embeddings and norms unquantized and outside the budget) every method allocates
widths {2,3,4,8,16} and RTN quantizes; then, on prompts that played no part in the importance:

- protected tasks: IOI logit difference (``ioi``, 32 prompts, seed 1) and induction loss
  (``evaluate.repeated_tokens``: BOS + 50 token ids drawn from 1,000-10,000 + the same again; the
  mean loss on the second copy without its first token; 24 sequences, seed 1). The importance
  reads only calibration prompts of seed 0 (16 IOI prompts, 16 sequences), checked disjoint from
  the evaluation prompts;
- held-out tasks (never protected): greater-than, subject-verb agreement, country capitals
  (logit difference, 24 prompts each);
- held-out LM loss: 8 windows of 128 tokens of the built-in corpus's test split (calibration
  reads 4,096 tokens of the train split).

Methods: ``circuit`` (protect ioi + induction) with each importance (``eap-ig``: node scores on
weight slices; ``gradient``: the tasks' Fisher), ``uniform``, ``random`` (5 seeds), ``awq``,
``fisher``, ``taylor``, ``layer``, ``shuffled`` (each circuit allocation's widths permuted: the
control); at the first budget also the cross-task runs (protect ioi only, induction only) and
GPTQ for the gradient circuit and uniform. Order: the first budget (gradient circuit, every baseline, random), uniform at 4.5 bits (the issue's row), the lower budgets against the strongest baselines, GPTQ, the cross-task runs, the rest. 95% confidence intervals: paired bootstrap over prompts (2,000 resamples). The peer
measured in the same run is uniform RTN at the same bits (the ratio printed per task).

Results go to ``OUT/results.jsonl`` one line per run as each finishes (with its wall and CPU seconds:
process + children, user + system) (a killed run resumes and
skips what is there; a torn last line is ignored), then ``OUT/table.md``, ``OUT/pareto.png`` and
``OUT/pareto.html``.

``--prune-select 0,0.1,...`` (after bench_prune.py, whose ``effects.pt`` it reads): prune that
fraction of MLP neurons by the circuit's removal Fisher before the gradient circuit's allocation
(their bits go to the knapsack), the fraction chosen on validation prompts (seed 2); the Fisher
baseline is also run with its own pruning (the LM removal Fisher) at that fraction.

``--fair-prune`` (with ``--prune-select``): every baseline also gets the chosen fraction of
neurons pruned by its own score (uniform and layer: weight magnitude; AWQ: activation; Fisher:
the LM mask Fisher; Taylor: the LM first-order removal effect; random: random neurons per seed;
the shuffled control: the circuit's pruned neurons, widths permuted over the rest), then GPTQ
with pruning at every budget and the cross-task runs with pruning. ``--eval-seed 3
--ioi-prompts 128 --prompts 64``: a larger evaluation set never used for selection or
importance (checked disjoint from the importance's seed-0 and the validation's seed-2 prompts).

    nice -n 5 python benchmarks/bench_compress.py [--bits 3.5,3.0,2.5] [--out DIR] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

import mechscope
from compress_report import cpu_seconds
from machine import add_device_option, device_label, pick_device
from mechscope.compress import evaluate
from mechscope.compress.api import IMPORTANCES, CompressConfig, calibration
from mechscope.compress.apply import quantize_model
from mechscope.compress.calib import input_stats, loss_grads, repeated_fisher, task_fisher
from mechscope.compress.groups import linear_weights
from mechscope.compress.importance import node_scores, task_importance
from mechscope.compress.methods import METHODS, Inputs, normalised
from mechscope.compress.quant import WIDTHS, effective_bits
from mechscope.compress.tables import error_tables
from mechscope.tasks import load_task
from mechscope.tasks.metrics import logit_diff

PROTECTED = ("ioi", "induction")
HELD_OUT = ("greater_than", "sva", "capitals")
BASELINES = ("uniform", "awq", "fisher", "taylor", "layer", "shuffled")


def log(*a: object) -> None:
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


def eval_sets(model, n_ioi: int, n_ind: int, n_held: int, lm_tokens: int, seed: int = 1) -> dict:  # type: ignore[no-untyped-def]
    sets = evaluate.eval_sets(model, ("ioi",), n_ioi, lm_tokens, seed=seed)
    sets.update(evaluate.eval_sets(model, ("induction",), n_ind, 0, seed=seed))
    return {**sets, **evaluate.eval_sets(model, HELD_OUT, n_held, 0, seed=seed)}


measure = evaluate.measure


def done_keys(path: Path) -> dict[str, dict]:
    rows = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a torn last line from a kill
                continue
            rows[row["key"]] = row
    return rows


def append(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        if f.tell() and not path.read_text().endswith("\n"):
            f.write("\n")  # drop a torn line's tail onto its own line
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def queue(bits_list: list[float]) -> list[dict]:
    def job(bits: float, method: str, protect: tuple = (), seed: int = 0, imp: str = "eap-ig",
            quantizer: str = "rtn") -> dict:  # fmt: skip
        tag = f"{'+'.join(protect)}:{imp}" if method in ("circuit", "shuffled") else ""
        return {"bits": bits, "method": method, "protect": protect if tag else (), "seed": seed,
                "importance": imp, "quantizer": quantizer,
                "key": f"{bits}/{method}/{tag}/{seed}/{quantizer}"}  # fmt: skip

    first, rest = bits_list[0], bits_list[1:]
    main = [job(first, "circuit", PROTECTED, imp="gradient")]
    main += [job(first, m, PROTECTED) for m in BASELINES]
    main.append(job(first, "shuffled", PROTECTED, imp="gradient"))
    main += [job(first, "random", seed=s) for s in range(5)]
    main.append(job(first, "circuit", PROTECTED))
    # lower budgets: the gradient circuit against the strongest baselines first
    lower = [job(b, m, PROTECTED, imp="gradient" if m in ("circuit", "shuffled") else "eap-ig")
             for b in rest for m in ("circuit", "uniform", "fisher", "layer")]  # fmt: skip
    gptq = [job(first, m, PROTECTED, imp="gradient", quantizer="gptq")
            for m in ("circuit", "uniform")]  # fmt: skip
    cross = [job(first, "circuit", (t,), imp=imp) for imp in IMPORTANCES for t in PROTECTED]
    later = [job(b, m, PROTECTED) for b in rest for m in ("awq", "taylor", "shuffled")]
    later += [job(b, "random", seed=s) for b in rest for s in range(5)]
    later += [job(b, "circuit", PROTECTED) for b in rest]
    jobs = [*main, job(4.5, "uniform"), *lower, *gptq, *cross, *later]  # the 4.5 row
    return jobs


def fair_queue(bits_list: list[float], f: float) -> list[dict]:
    """``--fair-prune``: the pruned circuit and every baseline with the same fraction ``f`` of
    MLP neurons pruned by its own score (:data:`PRUNE_BY`) at the first budget (the plain
    circuit, uniform and Fisher first, the other plain baselines after the pruned ones), then
    GPTQ with pruning and the cross-task runs with pruning (each task's own removal score) at
    the first budget, GPTQ with pruning lower, then the pruned RTN rows at the lower budgets."""

    def job(bits: float, method: str, by: str, seed: int = 0, quantizer: str = "rtn",
            protect: tuple = PROTECTED) -> dict:  # fmt: skip
        circ = method in ("circuit", "shuffled")
        tag = f"{'+'.join(protect)}:gradient" if circ else ""
        if by == PRUNE_BY.get(method, "circuit") and protect == PROTECTED and method != "shuffled":
            key = f"{bits}/{method}/pruned{f}"  # the pruned circuit's and Fisher's earlier key
        else:
            key = f"{bits}/{method}/{tag}/pruned{f}-{by}"
        return {"bits": bits, "method": method, "protect": protect if circ else (),
                "seed": seed, "importance": "gradient" if circ else "eap-ig",
                "quantizer": quantizer, "prune_neurons": f, "prune_by": by,
                "key": f"{key}/{seed}/{quantizer}"}  # fmt: skip

    first, rest = bits_list[0], bits_list[1:]
    main = [job(first, "circuit", "circuit"), job(first, "fisher", "fisher")]
    own = [job(first, m, PRUNE_BY[m]) for m in ("uniform", "awq", "taylor", "layer")]
    own.append(job(first, "shuffled", "circuit"))
    own += [job(first, "random", f"random:{s}", seed=s) for s in range(5)]
    gptq = [job(b, m, PRUNE_BY.get(m, "circuit"), quantizer="gptq")
            for b in bits_list for m in ("circuit", "fisher")]  # fmt: skip
    cross = [job(first, "circuit", f"circuit:{t}", protect=(t,)) for t in PROTECTED]
    lower = [job(b, m, PRUNE_BY.get(m, "circuit")) for b in rest for m in ("circuit", "fisher")]
    plain = [j for j in queue(bits_list) if j["bits"] == first and j["quantizer"] == "rtn"
             and len(j["protect"]) != 1]  # fmt: skip
    first_plain = [j for j in plain if j["method"] in ("uniform", "fisher")
                   or (j["method"] == "circuit" and j["importance"] == "gradient")]  # fmt: skip
    rest_plain = [j for j in plain if j not in first_plain]
    gptq_first = [j for j in gptq if j["bits"] == first]
    gptq_lower = [j for j in gptq if j["bits"] != first]
    return [*main, *first_plain, *own, *rest_plain, *gptq_first, *cross, *gptq_lower, *lower]


def prepare(model, layout, args, out: Path) -> dict:  # type: ignore[no-untyped-def]
    """Calibration statistics, error tables and task importances (cached in OUT/prep.pt)."""
    cache = out / "prep.pt"
    if cache.exists():
        prep = torch.load(cache, weights_only=True)
        if "task_tables" not in prep:
            prep["task_tables"] = task_tables(model, layout, args)
            torch.save(prep, cache)
        return prep
    cfg = CompressConfig(bits=16, method="awq", calib_tokens=args.calib_tokens)
    calib = calibration(model, cfg, split="train")
    log("calibration", len(calib), "batches")
    act, _ = input_stats(model, layout, calib)
    fisher, grad = loss_grads(model, layout, calib)
    log("statistics done")
    tables = error_tables(model, layout, WIDTHS, act=act, fisher=fisher, grad=grad)
    del fisher, grad
    log("error tables done")
    scores = {}
    for name in PROTECTED:
        batch = load_task(name, model, n=args.imp_prompts, seed=0).tokenize(model)
        scores[name] = node_scores(model, batch, logit_diff, steps=5)
        log("importance", name, scores[name].top_heads(5))
    d_head = model.dims.d_head
    task = {p: task_importance(layout, [scores[t] for t in p.split("+")], d_head)
            for p in ("ioi+induction", "ioi", "induction")}  # fmt: skip
    prep = {"tables": tables, "task": task, "task_tables": task_tables(model, layout, args),
            "top": {k: json.dumps(v.top_heads(10)) for k, v in scores.items()}}  # fmt: skip
    torch.save(prep, cache)
    return prep


def calib_prompts(model, args) -> dict:  # type: ignore[no-untyped-def]
    """The importance's prompts (seed 0): IOI prompts and repeated-token sequences."""
    return {"ioi": load_task("ioi", model, n=args.imp_prompts, seed=0).tokenize(model),
            "induction": evaluate.repeated_tokens(model, args.imp_prompts, seed=0)}  # fmt: skip


def check_disjoint(calib: dict, sets: dict, what: str = "calibration") -> None:
    """No calibration (or validation) prompt is an evaluation prompt."""
    a = {tuple(r.tolist()) for r in calib["ioi"].clean_tokens}
    b = {tuple(r.tolist()) for r in sets["ioi"].clean_tokens}
    c = {tuple(r.tolist()) for r in calib["induction"].tokens}
    d = {tuple(r.tolist()) for r in sets["induction"].tokens}
    if a & b or c & d:
        raise SystemExit(f"{what} and evaluation prompts overlap: {len(a & b) + len(c & d)}")
    log(f"{what} prompts disjoint from evaluation prompts")


def task_tables(model, layout, args) -> dict:  # type: ignore[no-untyped-def]
    """Each protected task's own Fisher table (importance="gradient"), normalised at 3 bits:
    IOI's squared logit-difference gradients, induction's squared induction-loss gradients."""
    stats = {
        "ioi": task_fisher(model, layout, calib_prompts(model, args)["ioi"], logit_diff),
        "induction": repeated_fisher(model, layout, calib_prompts(model, args)["induction"]),
    }
    tables = error_tables(model, layout, WIDTHS, extra=stats)
    log("task Fisher tables done")
    return {name: normalised(tables[name], WIDTHS.index(3)).float() for name in PROTECTED}


def run_job(model, layout, prep, job: dict, originals: dict, sets: dict, cache: dict) -> dict:  # type: ignore[no-untyped-def]
    start, cpu = time.perf_counter(), cpu_seconds()
    protect = "+".join(job["protect"])
    imp = job.get("importance", "eap-ig")
    tables = dict(prep["tables"])
    if job["protect"]:
        tables["task"] = sum(prep["task_tables"][t] for t in job["protect"])
    weight = job.get("task_weight", IMPORTANCES[imp])
    frac = job.get("prune_neurons", 0.0)
    by = job.get("prune_by", "circuit")
    if frac and ("pruned", frac, by) not in cache:
        cache["pruned", frac, by] = pruned_neurons(model, layout, Path(EFFECTS[0]), frac, by)
    pruned = cache[("pruned", frac, by)] if frac else None
    inp = Inputs(layout, WIDTHS, job["bits"], tables, prep["task"].get(protect), job["seed"],
                 1.0, weight, imp, pruned=pruned)  # fmt: skip
    ckey = (job["bits"], protect, imp, weight, frac)
    if job["method"] in ("circuit", "shuffled") and ckey not in cache:
        cache[ckey] = METHODS["circuit"](inp)
    if job["method"] == "circuit":
        widths = cache[ckey]
    elif job["method"] == "shuffled":
        widths = shuffle(cache[ckey], pruned, job["seed"])
    elif job["method"] == "uniform" and pruned is not None:
        widths = uniform_rest(inp, pruned)
    else:
        widths = METHODS[job["method"]](inp)
    hess = None
    if job["quantizer"] == "gptq":
        if "hess" not in cache:
            calib = calibration(
                model, CompressConfig(bits=16, method="awq", calib_tokens=2048), split="train"
            )
            cache["hess"] = input_stats(model, layout, calib, hessian=True)[1]
        hess = cache["hess"]
    quantize_model(model, layout, widths, job["quantizer"], hess, keep=False)
    values = measure(model, sets)
    with torch.no_grad():
        for name, w in originals.items():
            model.hf.get_parameter(name).copy_(w)
    hist = {b: float((widths == b).float().mean()) for b in WIDTHS}
    return {**job, "effective_bits": effective_bits(widths, layout.group_size), "histogram": hist,
            "values": values, "seconds": round(time.perf_counter() - start, 1),
            "cpu_seconds": round(cpu_seconds() - cpu, 1)}  # fmt: skip


def shuffle(widths: torch.Tensor, pruned: torch.Tensor | None, seed: int) -> torch.Tensor:
    """The control: ``widths`` permuted at random over the groups (seed ``seed + 1``); with a
    pruned mask only over the groups that are kept (the same pruned units, the same bit
    histogram of the rest)."""
    gen = torch.Generator().manual_seed(seed + 1)
    if pruned is None:
        return widths[torch.randperm(len(widths), generator=gen)]
    out, keep = widths.clone(), (~pruned).nonzero()[:, 0]
    out[keep] = widths[keep][torch.randperm(len(keep), generator=gen)]
    return out


def uniform_rest(inp: Inputs, pruned: torch.Tensor) -> torch.Tensor:
    """Uniform widths on the groups that are kept, at the budget the pruned groups free
    (``bits * groups / kept groups``; every group holds the same number of weights)."""
    from dataclasses import replace

    n, kept = len(pruned), int((~pruned).sum())
    rest = replace(inp, bits=inp.bits * n / kept, pruned=None)
    sub = replace(rest, layout=_SubLayout(inp.layout, kept))
    out = torch.zeros(n, dtype=torch.long)
    out[~pruned] = METHODS["uniform"](sub)
    return out


class _SubLayout:
    """The two fields :func:`methods.uniform` reads (group size, number of groups)."""

    def __init__(self, layout, n_groups: int) -> None:  # type: ignore[no-untyped-def]
        self.group_size, self.n_groups = layout.group_size, n_groups


def validation_sets(model, args) -> dict:  # type: ignore[no-untyped-def]
    """The validation prompts (seed 2) the task weight and the pruned fraction are chosen on."""
    return {**evaluate.eval_sets(model, ("ioi",), args.val_ioi_prompts, 0, seed=2),
            **evaluate.eval_sets(model, ("induction",), args.val_prompts, 0, seed=2)}  # fmt: skip


def select_weight(model, layout, prep, originals: dict, args, out: Path) -> dict:  # type: ignore[no-untyped-def]
    """The gradient circuit's task weight chosen on validation prompts (seed 2: neither the
    importance's seed 0 nor the evaluation's seed 1) at the first budget: the weight with the
    largest IOI share of the shipped model minus the induction loss's excess over it."""
    path = out / "select.json"
    if path.exists():
        return json.loads(path.read_text())
    sets = validation_sets(model, args)
    ship = {k: float(np.mean(v)) for k, v in measure(model, sets).items()}
    bits, scores = float(args.bits.split(",")[0]), {}
    for w in (float(x) for x in args.select.split(",")):
        job = {"bits": bits, "method": "circuit", "protect": PROTECTED, "seed": 0,
               "importance": "gradient", "quantizer": "rtn", "task_weight": w}  # fmt: skip
        v = run_job(model, layout, prep, job, originals, sets, {})["values"]
        ioi, ind = float(np.mean(v["ioi"])), float(np.mean(v["induction"]))
        scores[w] = {"ioi": ioi, "induction": ind,
                     "score": ioi / ship["ioi"] - (ind - ship["induction"]) / ship["induction"]}  # fmt: skip
        log("validation weight", w, scores[w])
    best = max(scores, key=lambda k: scores[k]["score"])
    sel = {"weight": best, "shipped": ship, "scores": {str(k): v for k, v in scores.items()}}
    path.write_text(json.dumps(sel, indent=1))
    return sel


PRUNE_BY = {"uniform": "magnitude", "layer": "magnitude", "awq": "activation",
            "fisher": "fisher", "taylor": "taylor", "random": "random", "shuffled": "circuit"}  # fmt: skip
EFFECTS: list[str] = ["benchmarks/out/prune/effects.pt"]  # set from --effects in main


def pruned_neurons(model, layout, effects: Path, fraction: float, by: str = "circuit"):  # type: ignore[no-untyped-def]
    """[group] bool: the groups of the ``fraction`` of MLP neurons with the lowest score ``by``
    (bench_prune.py's removal effects, seed-0 prompts and the train split; its cache
    ``effects.pt``): ``circuit`` the circuit (gradient) score (LM + IOI + induction mask
    Fisher, each normalised to mean 1), ``circuit:TASK`` the LM and that task's only (the
    cross-task runs), ``fisher`` the LM mask Fisher, ``taylor`` the LM first-order removal
    effect ``|sum_examples effect|``, ``activation`` the mean |write| (AWQ's own statistic),
    ``magnitude`` the weight norm (data-free: uniform's and layer's), ``random:SEED``."""
    from bench_prune import fisher, magnitude, norm1, scores
    from mechscope.compress.prune import select_units, unit_groups

    if not effects.exists():
        raise SystemExit(f"--prune-select needs {effects}; run bench_prune.py first (--effects)")
    d = model.dims
    k = round(fraction * d.n_layers * d.d_mlp)
    eff = torch.load(effects, weights_only=True)
    kind, _, arg = by.partition(":")
    if kind == "circuit" and arg:
        n = norm1(fisher(eff["lm"][1], d.n_kv_heads, False))
        n = n + norm1(fisher(eff[arg][1], d.n_kv_heads, False))
    elif kind == "taylor":
        n = eff["lm"][1].double().sum(0).abs()
    elif kind == "magnitude":
        n = magnitude(model, False)[1]
    else:
        method = {"circuit": "circuit (gradient)", "activation": "activation"}.get(kind, kind)
        n = scores(model, eff, None, method, False, seed=int(arg or 0))[1]
    h = torch.zeros(d.n_layers, d.n_heads)
    return unit_groups(layout, select_units(h, n, d.n_heads, d.n_kv_heads, 0, k), d.d_head)


def select_prune(model, layout, prep, originals: dict, args, out: Path, cache: dict) -> dict:  # type: ignore[no-untyped-def]
    """The fraction of MLP neurons to prune before the gradient circuit's allocation (their
    gate/up groups get width 0, their bits go to the rest), chosen on validation prompts (seed 2)
    at the first budget by the score of :func:`select_weight`."""
    path = out / "select_prune.json"
    fracs = [float(x) for x in args.prune_select.split(",")]
    if path.exists():
        return json.loads(path.read_text())
    sets = validation_sets(model, args)
    ship = {k: float(np.mean(v)) for k, v in measure(model, sets).items()}
    bits, found = float(args.bits.split(",")[0]), {}
    for f in fracs:
        job = {"bits": bits, "method": "circuit", "protect": PROTECTED, "seed": 0,
               "importance": "gradient", "quantizer": "rtn", "prune_neurons": f}  # fmt: skip
        v = run_job(model, layout, prep, job, originals, sets, cache)["values"]
        ioi, ind = float(np.mean(v["ioi"])), float(np.mean(v["induction"]))
        found[f] = {"ioi": ioi, "induction": ind,
                    "score": ioi / ship["ioi"] - (ind - ship["induction"]) / ship["induction"]}  # fmt: skip
        log("validation prune fraction", f, found[f])
    best = max(found, key=lambda k: found[k]["score"])
    sel = {"fraction": best, "shipped": ship, "scores": {str(k): v for k, v in found.items()}}
    path.write_text(json.dumps(sel, indent=1))
    return sel


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bits", default="3.5,3.0,2.5")
    p.add_argument("--out", default="benchmarks/out/compress")
    p.add_argument("--ioi-prompts", type=int, default=32)
    p.add_argument("--prompts", type=int, default=24, help="induction sequences")
    p.add_argument("--held-out-prompts", type=int, default=24, help="each held-out task's")
    p.add_argument("--imp-prompts", type=int, default=16, help="importance prompts per task")
    p.add_argument("--calib-tokens", type=int, default=4096)
    p.add_argument("--lm-tokens", type=int, default=1024)
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--select", default="", help="task weights to choose from on validation "
                   "prompts (seed 2) for an extra 'circuit (gradient, selected)' run")  # fmt: skip
    p.add_argument("--prune-select", default="", help="fractions of MLP neurons to prune before "
                   "the gradient circuit's allocation, chosen on validation prompts (seed 2); adds "
                   "a 'circuit (gradient) + pruned neurons' run at each budget")  # fmt: skip
    p.add_argument("--effects", default="benchmarks/out/prune/effects.pt",
                   help="bench_prune.py's removal effects (for --prune-select)")  # fmt: skip
    p.add_argument("--eval-seed", type=int, default=1, help="seed of the evaluation prompts "
                   "(0: the importance's, 2: the validation's; both refused by overlap checks)")  # fmt: skip
    p.add_argument("--val-ioi-prompts", type=int, default=32, help="validation IOI prompts")
    p.add_argument("--val-prompts", type=int, default=24, help="validation induction sequences")
    p.add_argument("--fair-prune", action="store_true", help="with --prune-select: every "
                   "baseline also with the chosen fraction of neurons pruned by its own score, "
                   "GPTQ with pruning at every budget, the cross-task runs with pruning")  # fmt: skip
    add_device_option(p)
    args = p.parse_args()
    EFFECTS[0] = args.effects
    device = pick_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    if not args.report_only:
        torch.manual_seed(0)
        model = mechscope.load("smollm2-135m", device=device, progress=False)
        layout = linear_weights(model)
        originals = {
            w.name: model.hf.get_parameter(w.name).detach().clone() for w in layout.weights
        }
        sets = eval_sets(model, args.ioi_prompts, args.prompts, args.held_out_prompts,
                         args.lm_tokens, args.eval_seed)  # fmt: skip
        check_disjoint(calib_prompts(model, args), sets)
        check_disjoint(validation_sets(model, args), sets, "validation")
        done = done_keys(results)
        if "shipped" not in done:
            append(results, {"key": "shipped", "method": "shipped", "bits": None,
                             "effective_bits": None, "values": measure(model, sets)})  # fmt: skip
        cpu = cpu_seconds()
        prep = prepare(model, layout, args, out)
        log(f"preparation: {cpu_seconds() - cpu:.0f} CPU-s (0 when cached)")
        cache: dict = {}
        jobs = queue([float(b) for b in args.bits.split(",")])
        if args.select:
            w = select_weight(model, layout, prep, originals, args, out)["weight"]
            for b in args.bits.split(","):
                jobs.insert(0, {"bits": float(b), "method": "circuit", "protect": PROTECTED,
                                "seed": 0, "importance": "gradient", "quantizer": "rtn",
                                "task_weight": w, "key": f"{float(b)}/circuit/selected/0/rtn"})  # fmt: skip
        if args.prune_select:
            f = select_prune(model, layout, prep, originals, args, out, cache)["fraction"]
            if args.fair_prune and f:
                jobs = fair_queue([float(b) for b in args.bits.split(",")], f) + jobs
            single = f and not args.fair_prune  # 0: the plain circuit row already runs
            for b in args.bits.split(",") if single else ():
                jobs.insert(0, {"bits": float(b), "method": "circuit", "protect": PROTECTED,
                                "seed": 0, "importance": "gradient", "quantizer": "rtn",
                                "prune_neurons": f, "key": f"{float(b)}/circuit/pruned{f}/0/rtn"})  # fmt: skip
                jobs.insert(1, {"bits": float(b), "method": "fisher", "protect": (), "seed": 0,
                                "importance": "eap-ig", "quantizer": "rtn", "prune_neurons": f,
                                "prune_by": "fisher", "key": f"{float(b)}/fisher/pruned{f}/0/rtn"})  # fmt: skip
        for job in jobs:
            if job["key"] in done_keys(results):
                continue
            row = run_job(model, layout, prep, job, originals, sets, cache)
            append(results, {**row, "protect": list(job["protect"])})
            v = row["values"]
            log(
                job["key"],
                f"{row['effective_bits']:.3f}",
                f"ioi {np.mean(v['ioi']):.2f}",
                f"ind {np.mean(v['induction']):.2f}",
                f"lm {np.mean(v['lm']):.3f}",
                f"{row['seconds']} s, {row['cpu_seconds']} CPU-s",
            )
    from compress_report import report  # the table, CIs and the Pareto plot

    report(done_keys(results), out, device_label(device))


if __name__ == "__main__":
    main()
