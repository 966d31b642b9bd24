"""Planted ground truth: a neuron edited to fire on one token finds exactly that token."""

from __future__ import annotations

import torch
from neuron_helpers import hooked

from mechscope.corpus import windows
from mechscope.neurons import logit_effects, mlp_neurons, residual_directions, scan

NEURON, TARGET_WORD = 7, "t42"


def plant(model, neuron: int, token: int) -> None:
    """Make layer 0's neuron detect ``token``: zero attention's write, aim gate and up at it."""
    hf = model.hf
    layer = hf.model.layers[0]
    with torch.no_grad():
        layer.self_attn.o_proj.weight.zero_()  # resid_mid == the token embedding
        x = layer.post_attention_layernorm(hf.model.embed_tokens.weight[token])
        u = x / x.norm()
        layer.mlp.gate_proj.weight[neuron] = 5 * u
        layer.mlp.up_proj.weight[neuron] = 5 * u


def test_planted_neuron_fires_on_its_token(corpus) -> None:
    model = hooked("llama")
    token = model.tokenizer.convert_tokens_to_ids(TARGET_WORD)
    plant(model, NEURON, token)
    tokens = torch.stack(list(windows(corpus, model.tokenizer, seq_len=10, seed=0)))
    containing = int((tokens == token).any(1).sum())
    assert containing >= 5  # the corpus has enough windows with the token
    k = min(containing, 8)
    result = scan(model, mlp_neurons(model, 0), [tokens[i : i + 3] for i in range(0, 84, 3)], k=k)
    assert result.ranked(1) == [NEURON]  # the planted neuron has the layer's largest maximum
    top = result.top
    for slot in range(k):
        window_tokens = top.tokens[NEURON, slot]
        pos = int(top.positions[NEURON, slot])
        assert int(window_tokens[pos]) == token  # highlighted at the token itself
        assert int(top.acts[NEURON, slot, 1:].argmax()) + 1 == pos  # first position left out
        # every occurrence of the token fires equally (layer 0 sees only the token)
        hits = top.acts[NEURON, slot][window_tokens == token]
        assert torch.allclose(hits, top.values[NEURON, slot].expand_as(hits))
    # one window without the token is weaker than any window with it
    others = top.acts[NEURON][top.tokens[NEURON] != token]
    assert others.max() < 0.5 * top.values[NEURON, -1]


def test_planted_direction_finds_its_token(corpus) -> None:
    """The embedding of a token, read at hook_embed, peaks exactly where the token is."""
    model = hooked("llama")
    token = model.tokenizer.convert_tokens_to_ids(TARGET_WORD)
    emb = model.hf.model.embed_tokens.weight.detach()
    direction = emb[token] / emb[token].norm()
    emb_norms = emb @ direction
    assert int(emb_norms.argmax()) == token  # the token is the direction's best match
    tokens = torch.stack(list(windows(corpus, model.tokenizer, seq_len=10, seed=0)))
    result = scan(model, residual_directions(model, "hook_embed", direction), [tokens], k=4)
    for slot in range(4):
        assert int(result.top.tokens[0, slot, result.top.positions[0, slot]]) == token


def test_planted_unembedding_direction_promotes_its_token() -> None:
    """A write along W_U[t] (no final norm) promotes t first; its negation suppresses it."""
    model = hooked("gpt2")
    w_u = model.hf.lm_head.weight.detach()
    writes = torch.stack([w_u[13] * 10, -w_u[13] * 10])
    effects = logit_effects(model, writes, 5)
    assert int(effects.promote_ids[0, 0]) == 13 and int(effects.suppress_ids[1, 0]) == 13
