"""Tables, paired bootstrap intervals and the Pareto plot of ``bench_compress.py``'s results.

``report(rows, out, device)`` prints the markdown tables (also written to ``OUT/table.md``) and
writes ``OUT/pareto.png`` and ``OUT/pareto.html`` (mechscope.viz templates, self-contained).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mechscope.viz import save_png
from mechscope.viz.compress import compression_page, pareto_figure

TASKS = ("ioi", "induction", "greater_than", "sva", "capitals", "lm")
LOWER_IS_BETTER = {"induction", "lm"}
METHOD_ORDER = ("circuit", "uniform", "random", "awq", "fisher", "taylor", "layer", "shuffled")
N_BOOT = 2000


def cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (user + system)."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def ci(values: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high) of the mean, bootstrap over prompts (95%)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), (N_BOOT, len(values)))
    means = values[idx].mean(1)
    return float(values.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def fmt(c: tuple[float, float, float], digits: int = 2) -> str:
    return f"{c[0]:.{digits}f} [{c[1]:.{digits}f}, {c[2]:.{digits}f}]"


def label(row: dict) -> str:
    m = row["method"]
    if m in ("circuit", "shuffled"):
        protect = "+".join(row.get("protect", []))
        m += f" ({row.get('importance', 'eap-ig')}"
        m += ")" if protect == "ioi+induction" else f", {protect} only)"
        if "task_weight" in row:  # the weight chosen on validation prompts (bench --select)
            m = SELECTED
    if row.get("prune_neurons"):  # bench --prune-select
        m += f" + {row['prune_neurons']:.0%} neurons pruned"
        by = row.get("prune_by", "circuit").split(":")[0]  # random:SEED: one row per method
        if by not in ("circuit", row["method"]):  # by its own score (bench --fair-prune)
            m += f" by {by}"
    if row.get("quantizer") == "gptq":
        m += " + GPTQ"
    return m


def group_rows(rows: dict[str, dict], bits: float) -> dict[str, dict[str, np.ndarray]]:
    """Per method label: per task, the per-prompt values (random: averaged over its seeds)."""
    out: dict[str, list[dict]] = {}
    for r in rows.values():
        if r.get("bits") == bits:
            out.setdefault(label(r), []).append(r)
    merged = {}
    for name, runs in out.items():
        merged[name] = {t: np.mean([np.asarray(r["values"][t]) for r in runs], axis=0)
                        for t in TASKS}  # fmt: skip
        merged[name]["_bits"] = np.array([np.mean([r["effective_bits"] for r in runs])])
        merged[name]["_n"] = np.array([len(runs)])
        merged[name]["_cpu"] = np.array([np.mean([r.get("cpu_seconds", np.nan) for r in runs])])
    same = (
        SELECTED in merged
        and "circuit (gradient)" in merged
        and all(np.array_equal(merged[SELECTED][t], merged["circuit (gradient)"][t]) for t in TASKS)
    )
    if same:  # the validated weight is the default one: one row, not two
        del merged[SELECTED]
    return merged


def order(names: list[str]) -> list[str]:
    def key(n: str) -> tuple[int, str]:
        base = n.split(" ")[0]
        return (METHOD_ORDER.index(base) if base in METHOD_ORDER else 99, n)

    return sorted(names, key=key)


def results_table(g: dict[str, dict[str, np.ndarray]], shipped: dict | None) -> tuple[list, list]:
    header = ["method", "eff. bits", "IOI logit diff", "induction loss", "greater-than LD",
              "SVA LD", "capitals LD", "held-out LM loss", "CPU s/run"]  # fmt: skip
    rows = []
    if shipped:
        v = {t: np.asarray(shipped["values"][t]) for t in TASKS}
        rows.append(
            ["as shipped (Q4_1)", "-"]
            + [fmt(ci(v[t]), 3 if t == "lm" else 2) for t in TASKS]
            + [""]
        )
    for name in order(list(g)):
        v = g[name]
        n = f" ({int(v['_n'][0])} seeds)" if name == "random" else ""
        cpu = "n/r" if np.isnan(v["_cpu"][0]) else f"{v['_cpu'][0]:.0f}"  # n/r: not recorded
        rows.append([name + n, f"{v['_bits'][0]:.3f}"]
                    + [fmt(ci(v[t]), 3 if t == "lm" else 2) for t in TASKS] + [cpu])  # fmt: skip
    return header, rows


SELECTED = "circuit (gradient, validated weight)"
MAIN = ("circuit (eap-ig)", "circuit (gradient)", SELECTED)


def mains(g: dict) -> list[str]:
    """The circuit rows compared against every baseline (with pruned neurons too, if run)."""
    pruned = [m for m in g if m.startswith("circuit") and "pruned" in m]
    return [m for m in g if m in MAIN] + [m for m in pruned if "only)" not in m and "GPTQ" not in m]


def paired_table(g: dict[str, dict[str, np.ndarray]]) -> tuple[list, list, dict]:
    """Each circuit variant minus each baseline (sign: positive = circuit better)."""
    header = ["circuit", "baseline", "IOI: circuit - baseline", "induction loss: baseline - "
              "circuit", "LM loss: baseline - circuit", "IOI CIs apart", "induction CIs apart",
              "ahead on both (paired CI > 0, CIs apart)"]  # fmt: skip
    rows, ahead = [], {}
    for main in mains(g):
        c = g[main]
        others = [n for n in g if not n.startswith("circuit") and "GPTQ" not in n]
        for name in order(others):
            b = g[name]
            d_ioi = ci(c["ioi"] - b["ioi"])
            d_ind = ci(b["induction"] - c["induction"])
            d_lm = ci(b["lm"] - c["lm"], seed=1)
            apart_ioi = ci(c["ioi"])[1] > ci(b["ioi"])[2]
            apart_ind = ci(c["induction"])[2] < ci(b["induction"])[1]
            ok = d_ioi[1] > 0 and d_ind[1] > 0 and apart_ioi and apart_ind
            ahead[(main, name)] = ok
            yn = ["yes" if x else "no" for x in (apart_ioi, apart_ind, ok)]
            rows.append([main, name, fmt(d_ioi), fmt(d_ind), fmt(d_lm, 3), *yn])
    return header, rows, ahead


def cross_table(g: dict[str, dict[str, np.ndarray]]) -> tuple[list, list]:
    header = ["method", "protected", *TASKS]
    rows = []
    pruned = sorted({n[n.index(" + ") :] for n in g if n.startswith("circuit") and " + " in n
                     and "pruned" in n and "GPTQ" not in n})  # fmt: skip
    for imp in ("eap-ig", "gradient"):
        for tail in ("", *pruned):
            for suffix, shown in ((")", "ioi + induction"), (", ioi only)", "ioi"),
                                  (", induction only)", "induction")):  # fmt: skip
                name = f"circuit ({imp}{suffix}{tail}"
                if name in g:
                    rows.append([f"circuit ({imp}){tail}", shown]
                                + [f"{g[name][t].mean():.{3 if t == 'lm' else 2}f}" for t in TASKS])  # fmt: skip
    for name in ("fisher", "awq", "uniform"):
        if name in g:
            rows.append([name, "none"]
                        + [f"{g[name][t].mean():.{3 if t == 'lm' else 2}f}" for t in TASKS])  # fmt: skip
    return header, rows


def goals(g: dict[str, dict[str, np.ndarray]], shipped: dict | None, ahead: dict) -> list[str]:
    lines = []
    for main in [m for m in mains(g) if shipped]:
        c = g[main]
        ship_ioi = float(np.mean(shipped["values"]["ioi"]))  # type: ignore[index]
        ioi_ok = c["ioi"].mean() >= 0.8 * ship_ioi
        lines += [
            f"{main}: IOI logit diff {c['ioi'].mean():.2f} = "
            f"{100 * c['ioi'].mean() / ship_ioi:.0f}% of the shipped model's {ship_ioi:.2f} "
            f"(goal >= 80%): {'met' if ioi_ok else 'NOT met'}",
            f"{main}: induction loss {c['induction'].mean():.2f} (goal <= 3.0): "
            f"{'met' if c['induction'].mean() <= 3.0 else 'NOT met'}",
        ]
        if "uniform" in g:
            u = g["uniform"]["lm"].mean()
            lines.append(f"{main}: held-out LM loss {c['lm'].mean():.3f} vs uniform {u:.3f} "
                         f"(goal: no worse): {'met' if c['lm'].mean() <= u else 'NOT met'}")  # fmt: skip
        behind = [b for (m, b), ok in ahead.items() if m == main and not ok]
        lines.append(f"{main}: ahead of every baseline on both protected tasks with separated "
                     "CIs: " + ("met" if not behind else f"NOT met (not ahead of: "
                                f"{', '.join(behind)})"))  # fmt: skip
    return lines


def md(header: list, rows: list) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]
    return "\n".join(out)


def report(rows: dict[str, dict], out: Path, device: str) -> None:
    shipped = rows.get("shipped")
    budgets = sorted({r["bits"] for r in rows.values() if r.get("bits")}, reverse=True)
    text, html_tables, points = [f"device {device}"], [], {}
    circ = [b for b in budgets if any(n.startswith("circuit") for n in group_rows(rows, b))]
    for bits in budgets:
        g = group_rows(rows, bits)
        h, r = results_table(g, shipped)
        ph, pr, ahead = paired_table(g)
        text += [f"\n### {bits} effective bits\n", md(h, r), "", md(ph, pr)]
        html_tables += [(f"{bits} bits: mean [95% CI]", r, h), (f"{bits} bits: paired", pr, ph)]
        if circ and bits == circ[0]:  # the cross-task runs are at the first circuit budget
            ch, cr = cross_table(g)
            text += ["", "Cross-task (protect A, measure B; means):", "", md(ch, cr)]
            html_tables.append((f"{bits} bits: cross-task", cr, ch))
        text += ["", *[f"- {line}" for line in goals(g, shipped, ahead)]]
        for name, v in g.items():
            for t in ("ioi", "induction", "lm"):
                m, lo, hi = ci(v[t])
                points.setdefault(f"{name}:{t}", []).append(
                    (float(v["_bits"][0]), m, (hi - lo) / 2)
                )
        for main in [m for m in mains(g) if "uniform" in g]:
            u, c = g["uniform"], g[main]
            ioi = (f"{c['ioi'].mean() / u['ioi'].mean():.2f}x" if u["ioi"].mean() > 0
                   else f"{c['ioi'].mean():.2f} vs {u['ioi'].mean():.2f} (no ratio: <= 0)")  # fmt: skip
            text.append(f"\n{main} against the peer (uniform RTN, same run) at {bits}: IOI "
                        f"{ioi}, induction loss "
                        f"{c['induction'].mean() / u['induction'].mean():.2f}x")  # fmt: skip
    body = "\n".join(text)
    print(body)
    (out / "table.md").write_text(body + "\n")
    ref = (
        {t: float(np.mean(shipped["values"][t])) for t in ("ioi", "induction", "lm")}
        if shipped
        else None
    )
    panels = [("ioi", "IOI logit difference (higher is better)"),
              ("induction", "induction loss, 2nd copy (lower is better)"),
              ("lm", "held-out LM loss (lower is better)")]  # fmt: skip
    fig = pareto_figure(points, panels, ref)
    save_png(fig, out / "pareto.png")
    page = compression_page("Circuit-guided compression: SmolLM2-135M-Instruct", fig, html_tables,
                            subtitle=f"RTN, groups of 64; {device}")  # fmt: skip
    (out / "pareto.html").write_text(page)
