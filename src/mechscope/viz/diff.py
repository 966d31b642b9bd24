"""Pages of model diffs: KL by token, the difference lens, steering and crosscoder latents.

Takes the ``to_dict()`` payload of ``mechscope diff`` and per-document token lists, never a model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mechscope.viz.html import figure_uri, page, render, table

__all__ = ["diff_page", "lens_norm_figure"]


def lens_norm_figure(norms: Sequence[float], title: str = "") -> Any:
    """The norm of the mean activation difference after each block."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3))
    ax = fig.add_subplot()
    ax.plot(range(len(norms)), norms, marker="o")
    ax.set_xlabel("layer (resid_post)")
    ax.set_ylabel("|mean(finetuned - base)|")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def _kl_sections(data: Mapping[str, Any], docs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    kl = data["kl"]
    rows = [
        [t["doc"], t["pos"], t.get("token", t["id"]), t.get("context", ""), round(t["kl"], 4)]
        for t in kl["top_tokens"]
    ]
    out = [
        (
            "Tokens where the finetune differs most",
            table(rows, ["doc", "pos", "token", "context", "KL"]),
        )
    ]
    if "planted" in kl:
        out.append(
            ("Against the planted behaviour", table(kl["planted"].items(), ["score", "value"]))
        )
    vmax = max((t["kl"] for d in docs for t in d["tokens"]), default=1.0) or 1.0
    out.append(
        ("Documents that differ most", render("diff_documents.html.j2", docs=docs, vmax=vmax))
    )
    return out


def _lens_sections(lens: Mapping[str, Any]) -> list[tuple[str, str]]:
    fig = lens_norm_figure(lens["norms"], "mean activation difference")
    rows = [
        [layer, " ".join(repr(t) for t in tokens)] for layer, tokens in enumerate(lens["tokens"])
    ]
    out = [
        ("Difference lens", render("figures.html.j2", figures=[(figure_uri(fig), "norms")])),
        ("Tokens the difference promotes (logit lens)", table(rows, ["layer", "top tokens"])),
    ]
    if "sae_features" in lens:
        feats = lens["sae_features"]
        rows = [[f["latent"], round(f["cosine"], 3)] for f in feats["top"]]
        out.append(
            (
                f"SAE latents along the difference at {feats['hook_name']}",
                table(rows, ["latent", "cosine"]),
            )
        )
    if "steering" in lens:
        s = lens["steering"]
        rows = [
            [r["layer"], r["scale"], round(r["logprob"], 3), round(r["gain"], 3)]
            for r in s["steered"]
        ]
        title = f"Steering the base model (unsteered log P(reply) = {s['baseline']:.3f})"
        out.append((title, table(rows, ["layer", "scale", "log P(reply)", "gain"])))
    return out


def _crosscoder_section(cc: Mapping[str, Any]) -> tuple[str, str]:
    keys = ["latent", "delta", "rank", "nu_r", "nu_eps", "fires", "precision", "recall", "auroc"]
    rows = [[_round(r.get(k, "")) for k in keys] for r in cc["most_finetune"]]
    if "best_planted" in cc:
        rows.append([_round(cc["best_planted"].get(k, "")) for k in keys])
    bands = ", ".join(f"{n}: {v}" for n, v in cc["bands"].items())
    site = cc.get("hook_name", f"layer {cc.get('layer')}")
    title = f"Crosscoder at {site}: {cc['alive']} live latents of {cc['d_sae']} ({bands})"
    return title, table(rows, keys)


def _round(value: Any) -> Any:
    return round(value, 3) if isinstance(value, float) else value


def diff_page(data: Mapping[str, Any], docs: list[dict[str, Any]]) -> str:
    """The page of one diff: ``data`` is the JSON payload, ``docs`` the documents to show, each
    ``{"doc", "mean", "tokens": [{"text", "kl", "planted"}]}``."""
    sections = _kl_sections(data, docs)
    if "lens" in data:
        sections += _lens_sections(data["lens"])
    if "crosscoder" in data:
        sections.append(_crosscoder_section(data["crosscoder"]))
    subtitle = (
        f"base {data['base']}, finetuned {data['finetuned']}, {data['kl']['n_tokens']} tokens"
    )
    return page("Model diff", sections, subtitle=subtitle)
