"""The weight groups of compression: 64 consecutive input columns of one output row.

Every decoder-layer ``nn.Linear`` weight (``[out, in]``) is cut into groups of ``group_size``
consecutive input columns of one output row; each group gets one bit width, one 16-bit scale and
one 16-bit zero point. Embeddings, norms and the unembedding stay unquantized and outside the
budget. :func:`linear_weights` lists the weights in layer order with what each row and column
means (``kind``: q, k, v, o, gate, up, down, or ``linear`` for a layer the family file does not
name), so importance scores of heads and neurons can be mapped onto groups (:mod:`.slices`).

Groups are numbered globally: weight ``i`` owns groups ``offset_i .. offset_i + n_groups_i``,
row-major over ``[out, in // group_size]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel

Tensor = torch.Tensor
DEFAULT_GROUP = 64


@dataclass(frozen=True)
class WeightInfo:
    """One quantized weight: its parameter name, layer, kind, shape and first group index."""

    name: str  # parameter name in the HF model, e.g. model.layers.3.self_attn.q_proj.weight
    layer: int
    kind: str  # q k v o gate up down, or linear
    out_features: int
    in_features: int
    offset: int  # index of its first group in the global numbering
    group_size: int

    @property
    def n_groups(self) -> int:
        return self.out_features * (self.in_features // self.group_size)

    @property
    def groups_per_row(self) -> int:
        return self.in_features // self.group_size

    @property
    def numel(self) -> int:
        return self.out_features * self.in_features


@dataclass(frozen=True)
class Layout:
    """Every quantized weight of a model, in layer order, with the global group numbering."""

    weights: tuple[WeightInfo, ...]
    group_size: int

    @property
    def n_groups(self) -> int:
        return sum(w.n_groups for w in self.weights)

    @property
    def numel(self) -> int:
        return sum(w.numel for w in self.weights)

    def by_name(self) -> dict[str, WeightInfo]:
        return {w.name: w for w in self.weights}

    def layer_of_groups(self) -> Tensor:
        """[group] the decoder layer of each group."""
        return torch.cat([torch.full((w.n_groups,), w.layer) for w in self.weights])

    def to_dict(self) -> dict:
        return {
            "group_size": self.group_size,
            "weights": [
                {k: getattr(w, k) for k in ("name", "layer", "kind", "out_features", "in_features")}
                for w in self.weights
            ],
        }


def _kinds(model: HookedModel) -> dict[str, str]:
    """Relative module path -> kind, from the family file (only the names it has)."""
    f = model.family
    named = {"q": f.q, "k": f.k, "v": f.v, "o": f.o, "gate": f.mlp_in, "up": f.mlp_up}
    named["down"] = f.mlp_out
    if f.qkv != "separate":
        named.pop("q"), named.pop("k"), named.pop("v")
    if f.mlp_gate_up or not model.dims.gated_mlp:
        named.pop("up")
        if f.mlp_gate_up:
            named.pop("gate")
    return {path: kind for kind, path in named.items() if path}


def linear_weights(model: HookedModel, group_size: int = DEFAULT_GROUP) -> Layout:
    """The layout of every ``nn.Linear`` weight inside the decoder layers."""
    if group_size < 1:
        raise MechscopeError(f"group size must be positive, got {group_size}")
    kinds = _kinds(model)
    layers = model.hf.get_submodule(model.family.layers)
    infos: list[WeightInfo] = []
    offset = 0
    for layer, block in enumerate(layers):
        for path, module in block.named_modules():
            if not isinstance(module, nn.Linear):
                continue
            out_f, in_f = module.weight.shape
            if in_f % group_size:
                raise MechscopeError(
                    f"{model.family.layers}.{layer}.{path} has {in_f} input columns, not a "
                    f"multiple of the group size {group_size}; pick a group size dividing it"
                )
            name = f"{model.family.layers}.{layer}.{path}.weight"
            info = WeightInfo(name, layer, kinds.get(path, "linear"), out_f, in_f, offset,
                              group_size)  # fmt: skip
            infos.append(info)
            offset += info.n_groups
    if not infos:
        raise MechscopeError("the model's decoder layers hold no nn.Linear weights to compress")
    return Layout(tuple(infos), group_size)


def get_weight(model: HookedModel, info: WeightInfo) -> Tensor:
    return model.hf.get_parameter(info.name)


def grouped(weight: Tensor, group_size: int) -> Tensor:
    """``[out, in]`` -> ``[out * in / group_size, group_size]`` (a view when contiguous)."""
    return weight.reshape(-1, group_size)
