"""The canonical site names (TransformerLens's hook names) of a model, with their shapes.

Each :class:`Site` names a place in the forward pass. ``kind`` says how it is reached (see
:mod:`mechscope.sites.hooks`); ``axes`` is its shape in the words of :mod:`mechscope.axes`.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from mechscope.errors import MechscopeError, NotAvailable
from mechscope.families.base import Dims, Family

SiteSelector = str | Iterable[str] | Callable[[str], bool] | None


@dataclass(frozen=True)
class Site:
    """One named hook point."""

    name: str
    kind: str
    layer: int | None
    axes: tuple[str, ...]

    def shape(self, dims: Dims) -> list[int | str]:
        """The shape with model dimensions filled in (batch and positions stay symbolic)."""
        sizes = {
            "d_model": dims.d_model,
            "d_head": dims.d_head,
            "d_mlp": dims.d_mlp,
            "d_vocab": dims.d_vocab,
            "expert": dims.n_experts,
            "top_k": dims.top_k,
            "one": 1,
        }
        out: list[int | str] = []
        for axis in self.axes:
            if axis == "head":
                out.append(dims.n_kv_heads if self.kind in ("k", "v") else dims.n_heads)
            else:
                out.append(sizes.get(axis, axis))
        return out


BPD = ("batch", "pos", "d_model")
BPHD = ("batch", "pos", "head", "d_head")
BHQK = ("batch", "head", "query_pos", "key_pos")


class SiteTable(dict[str, Site]):
    """Name -> :class:`Site` in forward order, plus why the family lacks the sites it lacks.

    ``absent`` maps a site name without its ``blocks.L.`` prefix (``"*"``: every block-internal
    site) to the reason.
    """

    absent: dict[str, str]


RESIDUAL_ONLY = ("hook_resid_pre", "hook_resid_post")
MOE_SITES = (
    "mlp.hook_router_logits",
    "mlp.hook_expert_indices",
    "mlp.hook_expert_weights",
    "mlp.hook_expert_out",
    "mlp.hook_shared_expert_out",
)


def _layer_rows(family: Family, dims: Dims) -> list[tuple[str, str, tuple[str, ...]]]:
    if family.residual_only:
        return [("hook_resid_pre", "resid_pre", BPD), ("hook_resid_post", "resid_post", BPD)]
    rows = [
        ("hook_resid_pre", "resid_pre", BPD),
        ("attn.hook_q", "q", BPHD),
        ("attn.hook_k", "k", BPHD),
        ("attn.hook_v", "v", BPHD),
        ("attn.hook_attn_scores", "scores", BHQK),
        ("attn.hook_pattern", "pattern", BHQK),
        ("attn.hook_z", "z", BPHD),
        ("attn.hook_result", "result", ("batch", "pos", "head", "d_model")),
        ("hook_attn_out", "attn_out", BPD),
    ]
    if not dims.parallel:
        rows.append(("hook_resid_mid", "resid_mid", BPD))
    rows.append(("mlp.hook_in", "mlp_in", BPD))  # the MLP module's input (after its norm)
    if family.moe is None:
        rows.append(("mlp.hook_pre", "mlp_pre", ("batch", "pos", "d_mlp")))
        if family.mlp_up:
            rows.append(("mlp.hook_pre_linear", "mlp_pre_linear", ("batch", "pos", "d_mlp")))
        rows.append(("mlp.hook_post", "mlp_post", ("batch", "pos", "d_mlp")))
    else:
        rows.append(("mlp.hook_router_logits", "router_logits", ("batch", "pos", "expert")))
        rows.append(("mlp.hook_expert_indices", "expert_indices", ("batch", "pos", "top_k")))
        rows.append(("mlp.hook_expert_weights", "expert_weights", ("batch", "pos", "expert")))
        rows.append(("mlp.hook_expert_out", "expert_out", ("batch", "pos", "expert", "d_model")))
        if family.moe.shared_expert:
            rows.append(("mlp.hook_shared_expert_out", "shared_expert_out", BPD))
    rows += [("hook_mlp_out", "mlp_out", BPD), ("hook_resid_post", "resid_post", BPD)]
    return rows


def absent_sites(family: Family, dims: Dims) -> dict[str, str]:
    """Block-site suffixes this family cannot have, with the reason."""
    kind = f"{family.name} models"
    if family.residual_only:
        return {
            "*": f"{kind} use the generic fallback (no family file): only hook_embed and "
            "blocks.L.hook_resid_pre/hook_resid_post exist"
        }
    out: dict[str, str] = {}
    if dims.parallel:
        out["hook_resid_mid"] = (
            f"{kind} run attention and MLP in parallel, so no residual lies between them"
        )
    moe = f"{kind} have a mixture-of-experts MLP with no dense neurons; use "
    if family.moe is not None:
        for name in ("mlp.hook_pre", "mlp.hook_pre_linear", "mlp.hook_post"):
            out[name] = moe + "mlp.hook_router_logits or mlp.hook_expert_out"
        if not family.moe.shared_expert:
            out["mlp.hook_shared_expert_out"] = f"{kind} have no shared expert"
    else:
        for name in MOE_SITES:
            out[name] = f"{kind} have a dense MLP, not a mixture of experts"
        if not family.mlp_up:
            out["mlp.hook_pre_linear"] = f"{kind} have an ungated MLP (no linear branch)"
    return out


def site_table(family: Family, dims: Dims) -> SiteTable:
    """Every site of a model, in forward order."""
    sites = [Site("hook_embed", "embed", None, BPD)]
    if family.pos_embed:
        sites.append(Site("hook_pos_embed", "pos_embed", None, BPD))
    rows = _layer_rows(family, dims)
    for layer in range(dims.n_layers):
        p = f"blocks.{layer}."
        sites += [Site(p + name, kind, layer, axes) for name, kind, axes in rows]
    if not family.residual_only:
        sites.append(Site("ln_final.hook_scale", "final_scale", None, ("batch", "pos", "one")))
        sites.append(Site("ln_final.hook_normalized", "final_normalized", None, BPD))
    table = SiteTable((s.name, s) for s in sites)
    table.absent = absent_sites(family, dims)
    if not family.pos_embed:
        table.absent["hook_pos_embed"] = f"{family.name} models have no learned position embedding"
    if family.residual_only:
        table.absent["ln_final.*"] = table.absent["*"]
    return table


def _absent_reason(name: str, table: dict[str, Site]) -> str | None:
    absent = getattr(table, "absent", {})
    head, _, rest = name.partition(".")
    suffix = rest.partition(".")[2] if head == "blocks" else name
    for key in (suffix, name):
        if key in absent:
            return absent[key]
    if name.startswith("ln_final.") and "ln_final.*" in absent:
        return absent["ln_final.*"]
    if head == "blocks" and "*" in absent and suffix not in RESIDUAL_ONLY:
        return absent["*"]
    return None


def unknown_site_error(name: str, table: dict[str, Site]) -> MechscopeError:
    reason = _absent_reason(name, table)
    if reason is not None:
        return NotAvailable(f"no hook {name!r}: {reason}")
    near = difflib.get_close_matches(name, list(table), n=3, cutoff=0.5)
    hint = f"; nearest: {', '.join(near)}" if near else "; run `mechscope info MODEL` to list them"
    return MechscopeError(f"unknown hook name {name!r}{hint}")


def select_sites(table: dict[str, Site], names: SiteSelector) -> list[str]:
    """Resolve a selector (None = all, a name, a glob, a list of names/globs, or a predicate)."""
    if names is None:
        return list(table)
    if isinstance(names, str) and names in table:  # the common case: one exact name
        return [names]
    if callable(names):
        return [n for n in table if names(n)]
    patterns = [names] if isinstance(names, str) else list(names)
    chosen: list[str] = []
    for pattern in patterns:
        if any(c in pattern for c in "*?["):
            hits = fnmatch.filter(table, pattern)
            if not hits:
                reason = _absent_reason(pattern.replace("*", "0", 1), table)
                if reason:
                    raise NotAvailable(f"hook name pattern {pattern!r} matches no site: {reason}")
                raise MechscopeError(f"hook name pattern {pattern!r} matches no site")
        elif pattern in table:
            hits = [pattern]
        else:
            raise unknown_site_error(pattern, table)
        chosen += [h for h in hits if h not in chosen]
    order = {n: i for i, n in enumerate(table)}
    return sorted(chosen, key=order.__getitem__)
