"""attention_patterns: one forward, the cached patterns of the chosen layers, checked exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mechscope import MechscopeError
from mechscope.heads import attention_patterns, head_summary, parse_layers

PROMPT = "When Mary and John went to the store , John gave a drink to"


@pytest.mark.parametrize("kind", ["llama", "gpt2", "gpt_neox"])
def test_patterns_are_the_cached_patterns_and_rows_sum_to_one(kind: str, make_tiny) -> None:
    model = make_tiny(kind)
    view = attention_patterns(model, PROMPT)
    tokens = model.to_tokens(PROMPT)
    _, cache = model.run_with_cache(tokens, names="blocks.*.attn.hook_pattern")
    n_layers, n_heads, n_pos = model.dims.n_layers, model.dims.n_heads, tokens.shape[1]
    assert view.patterns.shape == (n_layers, n_heads, n_pos, n_pos)
    assert view.layers == tuple(range(n_layers))
    assert view.str_tokens == model.to_str_tokens(tokens[0])
    for i in range(n_layers):
        expected = cache[f"blocks.{i}.attn.hook_pattern"][0].float().numpy()
        np.testing.assert_array_equal(view.patterns[i], expected)
    np.testing.assert_allclose(view.patterns.sum(-1), 1.0, atol=1e-5)
    upper = np.triu(np.ones((n_pos, n_pos), dtype=bool), 1)
    assert (view.patterns[..., upper] == 0).all(), "a causal model attends to no later token"


def test_patterns_reproduce_the_heads_outputs(tiny_llama) -> None:
    """z[q, head] = sum_k pattern[head, q, k] v[k, kv_head(head)]: the weights the model used."""
    model = tiny_llama
    view = attention_patterns(model, PROMPT, layers=[1])
    names = ["blocks.1.attn.hook_v", "blocks.1.attn.hook_z"]
    _, cache = model.run_with_cache(model.to_tokens(PROMPT), names=names)
    v, z = cache[names[0]][0], cache[names[1]][0]  # [pos kv_head d_head], [pos head d_head]
    group = model.dims.n_heads // v.shape[1]
    assert group > 1, "the tiny llama uses grouped-query attention"
    v = v.repeat_interleave(group, dim=1)
    mixed = torch.einsum("hqk,khd->qhd", torch.from_numpy(view.patterns[0]), v.float())
    torch.testing.assert_close(mixed, z.float(), atol=1e-5, rtol=1e-5)


def test_chosen_layers_only_and_token_input(tiny_llama) -> None:
    full = attention_patterns(tiny_llama, PROMPT)
    some = attention_patterns(tiny_llama, tiny_llama.to_tokens(PROMPT)[0], layers="2,0")
    assert some.layers == (0, 2)
    # layer 1 runs SDPA instead of eager attention here: equal up to float rounding
    np.testing.assert_allclose(some.patterns, full.patterns[[0, 2]], atol=1e-6)
    assert some.to_dict()["layers"] == [0, 2]


def test_parse_layers() -> None:
    assert parse_layers("0,1,5-7", 30) == (0, 1, 5, 6, 7)
    assert parse_layers("-1", 30) == (29,)
    assert parse_layers([3, 3, 1], 30) == (1, 3)
    assert parse_layers(None, 3) == (0, 1, 2)


@pytest.mark.parametrize(
    ("spec", "message"),
    [("30", "layer 30 is out of range"), ("2-40", "out of range"), ("a", "bad layer spec"),
     ("5-", "bad layer spec"), ("", "no layers"), (",", "no layers")],
)  # fmt: skip
def test_bad_layer_specs(spec: str, message: str) -> None:
    with pytest.raises(MechscopeError, match=message):
        parse_layers(spec, 30)


def test_bad_prompts(tiny_llama) -> None:
    with pytest.raises(MechscopeError, match="empty prompt"):
        attention_patterns(tiny_llama, "   ")
    with pytest.raises(MechscopeError, match="one prompt at a time"):
        attention_patterns(tiny_llama, torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(MechscopeError, match="out of range"):
        attention_patterns(tiny_llama, PROMPT, layers=[3])


def test_head_summary_by_hand(make_patterns) -> None:
    p = make_patterns(2, 3, 6)
    s = head_summary(p)
    for layer in range(2):
        for head in range(3):
            rows = p[layer, head]
            assert s["first_token"][layer, head] == pytest.approx(np.mean(rows[1:, 0]))
            prev = [rows[q, q - 1] for q in range(1, 6)]
            assert s["previous_token"][layer, head] == pytest.approx(np.mean(prev))
            assert s["self"][layer, head] == pytest.approx(
                np.mean([rows[q, q] for q in range(1, 6)])
            )
            assert s["last_query_argmax"][layer, head] == int(np.argmax(rows[-1]))
    with pytest.raises(MechscopeError, match="at least 2 tokens"):
        head_summary(p[..., :1, :1])


@pytest.mark.slow
def test_smollm2_patterns(smollm2, ioi_prompt: str) -> None:
    view = attention_patterns(smollm2, ioi_prompt, layers="0,14,29")
    names = [f"blocks.{i}.attn.hook_pattern" for i in (0, 14, 29)]
    _, cache = smollm2.run_with_cache(smollm2.to_tokens(ioi_prompt), names=names)
    assert view.patterns.shape == (3, 9, 14, 14)
    for row, name in enumerate(names):
        np.testing.assert_array_equal(view.patterns[row], cache[name][0].numpy())
    np.testing.assert_allclose(view.patterns.sum(-1), 1.0, atol=1e-5)
    assert view.str_tokens[1] == " Mary"


@pytest.mark.slow
def test_smollm2_ioi_has_a_head_from_the_last_token_to_the_indirect_object(
    smollm2, ioi_prompt: str
) -> None:
    """Positions line up with tokens: some late head reads " Mary" (position 1) from " to"
    (IOI name movers, Wang et al. 2022); on SmolLM2 it is L24H4 with weight 0.81."""
    view = attention_patterns(smollm2, ioi_prompt, layers="18-29")
    assert view.str_tokens[1] == " Mary" and view.str_tokens[9] == " John"
    last = view.patterns[:, :, -1, :]  # [layer head key_pos]
    row, head = np.unravel_index(np.argmax(last[..., 1]), last.shape[:2])
    assert last[row, head, 1] > 0.5 and last[row, head, 1] > 3 * last[row, head, 9]
