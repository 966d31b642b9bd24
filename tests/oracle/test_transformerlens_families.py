"""Oracle: every family's tiny model gives TransformerLens's numbers (its ``TransformerBridge``).

The bridge is booted offline on its own copy of the same random HF model (``hf_model=``, a
word-level tokenizer); it forces eager attention, so it is compared with ``attn="eager"``.
Compared: the logits (also of the default SDPA model), every site both libraries name, and the
logits after the same interventions in both.

Known differences, tested as such:

- ``attn.hook_attn_scores``: masked entries are ``-inf`` here and ``finfo.min`` in the bridge, so
  only entries finite in both are compared. For GPT-J and OPT the bridge's ``hook_attn_scores``
  holds the softmaxed pattern; there mechscope's scores are checked by their softmax.
- ``hook_pos_embed`` is [1 pos d_model] here (it broadcasts over the batch), [batch pos d_model]
  in the bridge.
- The generic fallback (BLOOM, MPT; the bridge cannot boot Persimmon) is compared on the logits
  and the residual-stream sites it has. BLOOM normalises the embedding before the first layer; the
  bridge's ``hook_embed`` is after that norm, mechscope's fallback keeps the embedding module's
  output (``blocks.0.hook_resid_pre`` is after it).
- ``mlp.hook_expert_indices``/``hook_expert_weights`` are [tokens ...] in the bridge,
  [batch pos ...] here: compared after flattening.
- Falcon's ``new_decoder_architecture`` (grouped qkv) makes the bridge fail to boot (it splits the
  fused projection as multi-query); that variant is checked by the other suites only.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import pytest
import torch

from mechscope import HookedModel
from mechscope.models.tiny import CONFIGS, VOCAB, tiny_model, tiny_tokenizer

TOL = 1e-5
NOT_IN_BRIDGE = {"falcon_grouped": "the bridge splits grouped qkv as multi-query and fails"}
KINDS = [k for k in CONFIGS if k not in NOT_IN_BRIDGE]
SCORES_ARE_PATTERN = {"gptj", "opt"}
X = torch.randint(2, VOCAB, (2, 7), generator=torch.Generator().manual_seed(0))


def boot(kind: str, attn: str = "eager") -> tuple[HookedModel, Any]:
    from transformer_lens.model_bridge import TransformerBridge

    hf = tiny_model(kind)
    theirs = copy.deepcopy(hf)
    theirs.config.architectures = [type(hf).__name__]  # from_config leaves it unset
    logging.disable(logging.WARNING)
    try:
        bridge = TransformerBridge.boot_transformers(
            kind, hf_model=theirs, tokenizer=tiny_tokenizer()
        )
    finally:
        logging.disable(logging.NOTSET)
    return HookedModel(hf, attn=attn), bridge


@pytest.fixture(scope="module", params=KINDS)
def pair(request: pytest.FixtureRequest) -> tuple[str, HookedModel, Any]:
    return (request.param, *boot(request.param))


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = torch.broadcast_tensors(a.float(), b.float())
    finite = torch.isfinite(a) & torch.isfinite(b)
    return (a[finite] - b[finite]).abs().max().item() if finite.any() else 0.0


def test_logits_match_the_bridge(pair: tuple[str, HookedModel, Any]) -> None:
    kind, eager, bridge = pair
    with torch.no_grad():
        theirs = bridge(X)
        assert max_diff(eager(X), theirs) <= TOL
        sdpa = HookedModel(copy.deepcopy(eager.hf))  # attention through SDPA where it can
        assert max_diff(sdpa(X), theirs) <= 1e-4


def test_every_common_site_matches_the_bridge(pair: tuple[str, HookedModel, Any]) -> None:
    kind, eager, bridge = pair
    with torch.no_grad():
        _, ours = eager.run_with_cache(X)
        _, theirs = bridge.run_with_cache(X)
    common = [n for n in ours if n in theirs]
    # the residual stream, attention and MLP-output sites exist in both for every family
    for must in ("hook_embed", "blocks.0.hook_resid_pre", "blocks.0.hook_attn_out",
                 "blocks.0.attn.hook_pattern", "blocks.0.hook_mlp_out",
                 "blocks.0.hook_resid_post"):  # fmt: skip
        assert must in common, must
    for name in common:
        a, b = ours[name], theirs[name]
        if name.endswith("hook_attn_scores") and kind in SCORES_ARE_PATTERN:
            a = torch.softmax(a, dim=-1)
        if name.endswith(("hook_expert_indices", "hook_expert_weights")):
            a = a.reshape(b.shape)
        if name != "hook_pos_embed":
            assert a.shape == b.shape, name
        assert max_diff(a, b) <= TOL * max(1.0, b.abs().max().item()), name


def test_interventions_match_the_bridge(pair: tuple[str, HookedModel, Any]) -> None:
    kind, eager, bridge = pair
    v = torch.randn(eager.dims.d_model, generator=torch.Generator().manual_seed(1))

    def zero_head(t: torch.Tensor, hook: Any) -> torch.Tensor:
        t = t.clone()
        t[:, :, 1] = 0
        return t

    def add(t: torch.Tensor, hook: Any) -> torch.Tensor:
        return t + v

    def halve(t: torch.Tensor, hook: Any) -> torch.Tensor:
        return t / 2

    hooks = [
        ("blocks.1.attn.hook_z", zero_head),
        ("blocks.0.hook_resid_post", add),
        ("blocks.0.hook_attn_out", halve),
    ]
    with torch.no_grad():
        ours = eager.run_with_hooks(X, fwd_hooks=hooks)
        theirs = bridge.run_with_hooks(X, fwd_hooks=hooks)
        assert (ours - eager(X)).abs().max() > 1e-3  # the interventions did something
    assert max_diff(ours, theirs) <= TOL


@pytest.mark.parametrize("kind", sorted(NOT_IN_BRIDGE))
def test_variants_the_bridge_cannot_boot(kind: str) -> None:
    with pytest.raises(Exception):  # noqa: B017 - any failure of the bridge
        boot(kind)


@pytest.mark.parametrize("kind", ["bloom", "mpt"])
def test_the_fallback_matches_the_bridge_on_the_residual_stream(kind: str) -> None:
    model, bridge = boot(kind, attn="sdpa")  # the fallback leaves attention as the model set it
    with torch.no_grad():
        logits, ours = model.run_with_cache(X)
        theirs_logits, theirs = bridge.run_with_cache(X)
    assert max_diff(logits, theirs_logits) <= TOL
    names = [n for n in ours if n.startswith("blocks.")]
    assert len(names) == 2 * model.dims.n_layers and all(n in theirs for n in names)
    for name in names:
        assert max_diff(ours[name], theirs[name]) <= TOL * max(1.0, theirs[name].abs().max()), name
