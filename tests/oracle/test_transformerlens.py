"""Oracle: mechscope gives TransformerLens's numbers on SmolLM2-135M.

The independent implementation is TransformerLens 4's ``TransformerBridge`` booted on its own copy
of the same HF model (the bridge forces eager attention on the model it wraps). The bridge
computes attention eagerly, so activations are compared with a mechscope model made with
``attn="eager"``: they agree to 0 in practice, within ``TOL`` by contract. The default SDPA model
is checked on logits only, with and without interventions: SDPA and eager attention differ by
~5e-5 in the logits but by up to ~5e-4 in the residual stream, whose entries reach ~2e4 on the
first token.

Known differences from the bridge, tested as such below:

- ``attn.hook_attn_scores``: masked entries are ``-inf`` in mechscope (as in TransformerLens's
  ``HookedTransformer``); the bridge writes ``torch.finfo(dtype).min``.
- ``hook_resid_mid``: the bridge aliases it to ``ln2.hook_in``, so a replacement there reaches the
  MLP's input but not the residual stream carried past the MLP. mechscope follows
  ``HookedTransformer``: it replaces the residual itself, which is the same as adding the
  difference to ``hook_attn_out``.
- ``hook.name`` inside a hook function: mechscope passes the name asked for; the bridge passes
  its internal hook point (``blocks.5.attn.o.hook_in`` for ``blocks.5.attn.hook_z``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch

import mechscope

pytestmark = pytest.mark.slow

HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
OTHER_PROMPT = "When Tom and Sarah went to the park, Sarah gave a ball to"  # same 14 tokens
N_LAYERS = 30
TOL = 1e-4
EFFECT = 1e-2  # an intervention must move some logit by more than this, in both libraries
SITES = [
    "hook_resid_pre",
    "hook_resid_post",
    "attn.hook_pattern",
    "attn.hook_z",
    "mlp.hook_post",
    # and every other site that both libraries name on a Llama block
    "attn.hook_q",
    "attn.hook_k",
    "attn.hook_v",
    "hook_attn_out",
    "hook_resid_mid",
    "mlp.hook_pre",
    "mlp.hook_pre_linear",
    "hook_mlp_out",
]
GLOBAL_SITES = ["hook_embed", "ln_final.hook_scale", "ln_final.hook_normalized"]

Hooks = list[tuple[str, Callable[..., Any]]]


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}"
    return (a.float() - b.float()).abs().max().item()


@pytest.fixture(scope="module")
def tokens(smollm2: mechscope.HookedModel, ioi_prompt: str) -> torch.Tensor:
    tokens, mask = smollm2.tokenize([ioi_prompt, OTHER_PROMPT])
    assert mask.all(), "the prompts must have the same length: no padding in this file"
    return tokens


@pytest.fixture(scope="module")
def bridge(smollm2_hf_copy: tuple[Any, Any]) -> Any:
    from transformer_lens.model_bridge import TransformerBridge

    hf, tokenizer = smollm2_hf_copy
    return TransformerBridge.boot_transformers(
        HUB_ID, hf_model=copy.deepcopy(hf), tokenizer=tokenizer
    )


@pytest.fixture(scope="module")
def eager(smollm2_hf_copy: tuple[Any, Any]) -> mechscope.HookedModel:
    hf, tokenizer = smollm2_hf_copy
    return mechscope.HookedModel(copy.deepcopy(hf), tokenizer, attn="eager")


@pytest.fixture(scope="module")
def clean_logits(bridge: Any, tokens: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return bridge(tokens)


# -- logits without hooks ---------------------------------------------------------------------


def test_unhooked_logits_are_the_bare_hf_models(
    smollm2: mechscope.HookedModel, smollm2_hf_copy: tuple[Any, Any], tokens: torch.Tensor
) -> None:
    hf, _ = smollm2_hf_copy
    with torch.inference_mode():
        bare = hf(input_ids=tokens, use_cache=False).logits
        ours = smollm2(tokens)
    assert torch.equal(ours, bare), f"max diff {max_diff(ours, bare):.3g}"


@pytest.mark.parametrize("mode", ["eager", "sdpa"])
def test_unhooked_logits_match_the_bridge(
    mode: str,
    eager: mechscope.HookedModel,
    smollm2: mechscope.HookedModel,
    bridge: Any,
    tokens: torch.Tensor,
) -> None:
    m = eager if mode == "eager" else smollm2
    with torch.inference_mode():
        ours, theirs = m(tokens), bridge(tokens)
    assert max_diff(ours, theirs) <= TOL


# -- cached activations -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def caches(eager: mechscope.HookedModel, bridge: Any, tokens: torch.Tensor) -> tuple:
    assert eager.dims.n_layers == N_LAYERS
    names = [f"blocks.{layer}.{s}" for layer in range(N_LAYERS) for s in SITES] + GLOBAL_SITES
    names.append("blocks.7.attn.hook_attn_scores")
    with torch.inference_mode():
        _, ours = eager.run_with_cache(tokens, names=names)
        _, theirs = bridge.run_with_cache(tokens, names_filter=names)
    assert set(ours) == set(names), "the cache must hold exactly the sites asked for"
    return ours, theirs


@pytest.mark.parametrize("site", SITES)
def test_cached_site_matches_the_bridge_in_every_layer(site: str, caches: tuple) -> None:
    ours, theirs = caches
    layers = [f"blocks.{layer}.{site}" for layer in range(N_LAYERS)]
    diffs = {n: max_diff(ours[n], theirs[n]) for n in layers}
    worst = max(diffs, key=diffs.__getitem__)
    assert diffs[worst] <= TOL, f"{worst}: max diff {diffs[worst]:.3g}"


@pytest.mark.parametrize("name", GLOBAL_SITES)
def test_cached_global_site_matches_the_bridge(name: str, caches: tuple) -> None:
    ours, theirs = caches
    assert max_diff(ours[name], theirs[name]) <= TOL


def test_scores_match_except_the_masked_fill_value(caches: tuple) -> None:
    ours, theirs = caches
    name = "blocks.7.attn.hook_attn_scores"
    a, b = ours[name], theirs[name]
    masked = torch.triu(torch.ones(a.shape[-2:], dtype=torch.bool), diagonal=1)
    assert torch.isneginf(a[..., masked]).all()
    assert (b[..., masked] == torch.finfo(b.dtype).min).all()
    assert max_diff(a[..., ~masked], b[..., ~masked]) <= TOL


def test_per_head_results_match_the_bridge(
    eager: mechscope.HookedModel, bridge: Any, tokens: torch.Tensor
) -> None:
    names = [f"blocks.{layer}.attn.hook_result" for layer in (0, 14, 29)]
    bridge.set_use_attn_result(True)
    try:
        with torch.inference_mode():
            _, ours = eager.run_with_cache(tokens, names=names)
            _, theirs = bridge.run_with_cache(tokens, names_filter=names)
    finally:
        bridge.set_use_attn_result(False)
    for name in names:
        assert max_diff(ours[name], theirs[name]) <= TOL, name


# -- interventions ----------------------------------------------------------------------------

_VEC = torch.randn(576, generator=torch.Generator().manual_seed(0)) * 2


def zero_head_3(z: torch.Tensor, hook: Any) -> torch.Tensor:
    z = z.clone()
    z[:, :, 3] = 0
    return z


def zero_head_3_in_place(z: torch.Tensor, hook: Any) -> None:
    z[:, :, 3] = 0  # the TransformerLens idiom: edit the activation, return nothing


def add_vector(x: torch.Tensor, hook: Any) -> torch.Tensor:
    return x + _VEC


def scale(x: torch.Tensor, hook: Any) -> torch.Tensor:
    return x * 1.5


def attend_last_row_to_mary(pattern: torch.Tensor, hook: Any) -> torch.Tensor:
    pattern = pattern.clone()
    pattern[:, :, -1, :] = 0
    pattern[:, :, -1, 2] = 1  # key 2 is " Mary" / " Tom"
    return pattern


def boost_key_4(scores: torch.Tensor, hook: Any) -> torch.Tensor:
    return scores + 3 * (torch.arange(scores.shape[-1]) == 4)


def scale_query_head_0(q: torch.Tensor, hook: Any) -> torch.Tensor:
    q = q.clone()
    q[:, :, 0] *= 3
    return q


def zero_kv_head_1(v: torch.Tensor, hook: Any) -> torch.Tensor:
    v = v.clone()
    v[:, :, 1] = 0
    return v


INTERVENTIONS: dict[str, Hooks] = {
    "zero z of L5 head 3": [("blocks.5.attn.hook_z", zero_head_3)],
    "zero z of L5 head 3 in place": [("blocks.5.attn.hook_z", zero_head_3_in_place)],
    "add vector to L10 resid_post": [("blocks.10.hook_resid_post", add_vector)],
    "scale L2 mlp.hook_post": [("blocks.2.mlp.hook_post", scale)],
    "replace L4 pattern row": [("blocks.4.attn.hook_pattern", attend_last_row_to_mary)],
    "add to L4 scores": [("blocks.4.attn.hook_attn_scores", boost_key_4)],
    "scale L7 q head 0": [("blocks.7.attn.hook_q", scale_query_head_0)],
    "scale L7 k": [("blocks.7.attn.hook_k", scale)],
    "zero L7 kv head 1 of v": [("blocks.7.attn.hook_v", zero_kv_head_1)],
    "add vector to L0 resid_pre": [("blocks.0.hook_resid_pre", add_vector)],
    "add vector to embed": [("hook_embed", add_vector)],
    "add vector to L10 attn_out": [("blocks.10.hook_attn_out", add_vector)],
    "add vector to L10 mlp_out": [("blocks.10.hook_mlp_out", add_vector)],
    "scale L2 mlp.hook_pre": [("blocks.2.mlp.hook_pre", scale)],
    "scale L2 mlp.hook_pre_linear": [("blocks.2.mlp.hook_pre_linear", scale)],
    "scale ln_final.hook_scale": [("ln_final.hook_scale", scale)],
    "scale ln_final.hook_normalized": [("ln_final.hook_normalized", scale)],
    "two hooks on one site, in order": [
        ("blocks.3.hook_resid_post", add_vector),
        ("blocks.3.hook_resid_post", scale),
    ],
    "hooks in several layers at once": [
        ("blocks.1.attn.hook_pattern", attend_last_row_to_mary),
        ("blocks.5.attn.hook_z", zero_head_3),
        ("blocks.20.mlp.hook_post", scale),
    ],
}


@pytest.mark.parametrize("hooks", INTERVENTIONS.values(), ids=INTERVENTIONS.keys())
def test_intervention_matches_the_bridge(
    hooks: Hooks,
    eager: mechscope.HookedModel,
    bridge: Any,
    tokens: torch.Tensor,
    clean_logits: torch.Tensor,
) -> None:
    with torch.inference_mode():
        ours = eager.run_with_hooks(tokens, fwd_hooks=hooks)
        theirs = bridge.run_with_hooks(tokens, fwd_hooks=hooks)
    assert max_diff(theirs, clean_logits) > EFFECT, "the intervention does nothing in the oracle"
    assert max_diff(ours, theirs) <= TOL


@pytest.mark.parametrize(
    "case", ["replace L4 pattern row", "add to L4 scores", "zero z of L5 head 3"]
)
def test_intervention_in_sdpa_mode_matches_the_bridge(
    case: str, smollm2: mechscope.HookedModel, bridge: Any, tokens: torch.Tensor
) -> None:
    # only the hooked layer runs eagerly; SDPA elsewhere keeps the logits within ~5e-5
    hooks = INTERVENTIONS[case]
    with torch.inference_mode():
        ours = smollm2.run_with_hooks(tokens, fwd_hooks=hooks)
        theirs = bridge.run_with_hooks(tokens, fwd_hooks=hooks)
    assert max_diff(ours, theirs) <= TOL


def test_comparison_tells_interventions_apart(
    eager: mechscope.HookedModel, bridge: Any, tokens: torch.Tensor
) -> None:
    def zero_head_4(z: torch.Tensor, hook: Any) -> torch.Tensor:
        z = z.clone()
        z[:, :, 4] = 0
        return z

    with torch.inference_mode():
        ours = eager.run_with_hooks(tokens, fwd_hooks=[("blocks.5.attn.hook_z", zero_head_4)])
        theirs = bridge.run_with_hooks(tokens, fwd_hooks=[("blocks.5.attn.hook_z", zero_head_3)])
    assert max_diff(ours, theirs) > EFFECT


def test_resid_mid_replaces_the_residual_where_the_bridge_replaces_the_mlp_input(
    eager: mechscope.HookedModel, bridge: Any, tokens: torch.Tensor
) -> None:
    def bridge_with(name: str) -> torch.Tensor:
        return bridge.run_with_hooks(tokens, fwd_hooks=[(name, add_vector)])

    with torch.inference_mode():
        ours = eager.run_with_hooks(tokens, fwd_hooks=[("blocks.10.hook_resid_mid", add_vector)])
        theirs = bridge_with("blocks.10.hook_resid_mid")
        theirs_via_attn_out = bridge_with("blocks.10.hook_attn_out")
        theirs_via_ln2_in = bridge_with("blocks.10.ln2.hook_in")
    # resid_mid += v is attn_out += v, up to the rounding of the subtraction that mechscope
    # uses to write the new resid_mid back (attn_out := resid_mid' - resid_pre)
    assert max_diff(ours, theirs_via_attn_out) <= TOL
    assert torch.equal(theirs, theirs_via_ln2_in)
    assert max_diff(ours, theirs) > EFFECT


def test_cache_under_an_intervention_matches_the_bridge(
    eager: mechscope.HookedModel, bridge: Any, tokens: torch.Tensor
) -> None:
    hooks: Hooks = [("blocks.5.attn.hook_z", zero_head_3)]
    names = ["blocks.5.attn.hook_z", "blocks.5.hook_resid_post", "blocks.6.attn.hook_pattern"]
    with torch.inference_mode():
        _, ours = eager.run_with_cache(tokens, names=names, fwd_hooks=hooks)
        _, clean = eager.run_with_cache(tokens, names=names)
        with bridge.hooks(fwd_hooks=hooks):
            _, theirs = bridge.run_with_cache(tokens, names_filter=names)
    assert not ours["blocks.5.attn.hook_z"][:, :, 3].any()
    for name in names:
        assert max_diff(ours[name], clean[name]) > 0, f"{name} does not show the intervention"
        assert max_diff(ours[name], theirs[name]) <= TOL, name


def test_hook_functions_see_the_same_layer_and_the_asked_name(
    eager: mechscope.HookedModel, bridge: Any, tokens: torch.Tensor
) -> None:
    seen: dict[str, list[tuple[str, int | None]]] = {"ours": [], "theirs": []}
    names = ["blocks.5.attn.hook_z", "blocks.6.hook_resid_post", "blocks.7.attn.hook_pattern"]

    def recorder(key: str) -> Callable[..., None]:
        return lambda x, hook: seen[key].append((hook.name, hook.layer()))

    with torch.inference_mode():
        eager.run_with_hooks(tokens, fwd_hooks=[(n, recorder("ours")) for n in names])
        bridge.run_with_hooks(tokens, fwd_hooks=[(n, recorder("theirs")) for n in names])
    assert seen["ours"] == [(n, int(n.split(".")[1])) for n in names]
    assert [layer for _, layer in seen["theirs"]] == [5, 6, 7]
