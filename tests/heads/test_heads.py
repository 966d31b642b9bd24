"""Head detectors on tiny random models: exact identities against naive re-computations.

- pattern scores equal a per-sequence, per-query loop over ``run_with_cache`` patterns, with the
  targets found by scanning the tokens (no mask code shared);
- the per-head weights reproduce the model's own q, k, v (GQA: repeated per query head) and
  attention output; composition, eigenvalue copying and copy-suppression scores equal their
  dense d_model x d_model / vocab x vocab definitions;
- one batched forward per ``batch_size`` sequences, whatever the number of heads;
- bad input raises MechscopeError.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mechscope import HookedModel, MechscopeError
from mechscope.heads import (
    DETECTORS,
    composition_scores,
    copy_suppression_scores,
    head_scores,
    head_weights,
    ov_copying_scores,
    qk_copying_scores,
    repeated_tokens,
)
from mechscope.heads.weights import normalized_embedding, unembedding
from mechscope.models.tiny import tiny_model

FAMILIES = ["llama", "gpt2", "gpt_neox", "mixtral"]
PATTERN = ["induction", "previous_token", "duplicate_token", "attention_sink"]


@pytest.fixture(scope="module", params=FAMILIES)
def model(request: pytest.FixtureRequest) -> HookedModel:
    return HookedModel(tiny_model(request.param))


def targets(tokens: list[int], q: int, kind: str) -> list[int]:
    """The keys a head of ``kind`` should attend to from query q, by scanning the tokens."""
    if kind == "previous_token":
        return [q - 1] if q >= 1 else []
    if kind == "attention_sink":
        return [0] if q >= 1 else []
    earlier = [k for k in range(q) if tokens[k] == tokens[q]]
    if kind == "duplicate_token":
        return earlier
    return [k + 1 for k in earlier if k + 1 <= q]  # induction


def naive_scores(model: HookedModel, tokens: torch.Tensor, kind: str) -> torch.Tensor:
    _, cache = model.run_with_cache(tokens, names="blocks.*.attn.hook_pattern")
    out = torch.zeros(model.dims.n_layers, model.dims.n_heads)
    for layer in range(model.dims.n_layers):
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"]
        for b, row in enumerate(tokens.tolist()):
            per_q = [
                pattern[b, :, q, targets(row, q, kind)].sum(-1)
                for q in range(len(row))
                if targets(row, q, kind)
            ]
            out[layer] += torch.stack(per_q).mean(0)
    return out / len(tokens)


@pytest.mark.parametrize("bos", [False, True])
def test_pattern_scores_equal_naive_loop(model: HookedModel, bos: bool) -> None:
    tokens = repeated_tokens(model, 5, 9, seed=3, prepend_bos=False)
    if bos:
        tokens = torch.cat([torch.zeros(5, 1, dtype=torch.long), tokens], 1)
    scores = head_scores(model, PATTERN, tokens=tokens, batch_size=2)
    for kind in PATTERN:
        expected = naive_scores(model, tokens, kind)
        torch.testing.assert_close(scores.scores[kind], expected, atol=1e-5, rtol=1e-5)
        assert float(scores.scores[kind].min()) >= 0
        assert float(scores.scores[kind].max()) <= 1


def test_one_forward_per_batch() -> None:
    model = HookedModel(tiny_model("llama"))
    calls = []
    forward = model.hf.forward
    model.hf.forward = lambda *a, **k: calls.append(1) or forward(*a, **k)
    head_scores(model, PATTERN, n_seqs=10, seq_len=8, batch_size=4)
    assert len(calls) == 3  # ceil(10 / 4), for all layers, heads and detectors at once


def test_repeated_tokens_shape_and_content() -> None:
    model = HookedModel(tiny_model("gpt2"))
    tokens = repeated_tokens(model, 4, 7, seed=0)
    assert tokens.shape == (4, 14)
    assert torch.equal(tokens[:, :7], tokens[:, 7:])
    assert all(len(set(row[:7])) == 7 for row in tokens.tolist())
    assert torch.equal(tokens, repeated_tokens(model, 4, 7, seed=0))
    assert not torch.equal(tokens, repeated_tokens(model, 4, 7, seed=1))


def _ln_in(model: HookedModel, layer: int, tokens: torch.Tensor) -> torch.Tensor:
    """The layer's input norm output with the norm's own weight and bias removed."""
    ln = model.hf.get_submodule(f"{model.family.layers}.{layer}.{model.family.ln1}")
    seen = []
    handle = ln.register_forward_hook(lambda _m, _i, out: seen.append(out))
    names = [f"blocks.{layer}.attn.hook_{s}" for s in "qkvz"] + [f"blocks.{layer}.hook_attn_out"]
    try:
        _, cache = model.run_with_cache(tokens, names=names)
    finally:
        handle.remove()
    bias = getattr(ln, "bias", None)
    y = seen[0] - (0 if bias is None else bias)
    return y / ln.weight, cache


def test_head_weights_reproduce_qkv_and_output(model: HookedModel) -> None:
    tokens = torch.randint(0, 101, (2, 6), generator=torch.Generator().manual_seed(0))
    rep = model.dims.n_heads // model.dims.n_kv_heads
    for layer in range(model.dims.n_layers):
        x, cache = _ln_in(model, layer, tokens)
        w = head_weights(model, layer)
        name = f"blocks.{layer}.attn.hook_"
        for s, mat in (("q", w.W_Q), ("k", w.W_K), ("v", w.W_V)):
            got = torch.einsum("bpd,hde->bphe", x, mat)  # bias-free
            want = cache[name + s]
            if s != "q":
                want = want.repeat_interleave(rep, dim=2)
            centred = (got - want) - (got - want).mean((0, 1), keepdim=True)  # removes biases
            assert centred.abs().max() < 1e-4, (layer, s)
        out = torch.einsum("bphe,hed->bpd", cache[name + "z"], w.W_O)
        attn_out = cache[f"blocks.{layer}.hook_attn_out"]
        if model.dims.norm == "layer":
            attn_out = attn_out - attn_out.mean(-1, keepdim=True)
        diff = out - attn_out
        assert (diff - diff[:1, :1]).abs().max() < 1e-4  # equal up to the shared output bias


def dense_comp(model: HookedModel, kind: str) -> torch.Tensor:
    ws = [head_weights(model, layer) for layer in range(model.dims.n_layers)]
    n_l, n_h = model.dims.n_layers, model.dims.n_heads
    out = torch.full((n_l, n_h, n_l, n_h), float("nan"))
    for la in range(n_l):
        for lb in range(la + 1, n_l):
            for a in range(n_h):
                ov_a = ws[la].W_V[a] @ ws[la].W_O[a]
                for b in range(n_h):
                    qk_b = ws[lb].W_Q[b] @ ws[lb].W_K[b].T
                    mat = {"q": qk_b, "k": qk_b.T, "v": ws[lb].W_V[b] @ ws[lb].W_O[b]}[kind]
                    out[la, a, lb, b] = (ov_a @ mat).norm() / (ov_a.norm() * mat.norm())
    return out


@pytest.mark.parametrize("kind", ["q", "k", "v"])
def test_composition_equals_dense(model: HookedModel, kind: str) -> None:
    got = composition_scores(model, kind)
    torch.testing.assert_close(got, dense_comp(model, kind), atol=1e-4, rtol=1e-4, equal_nan=True)


def _dense_eigen(m: torch.Tensor) -> float:
    lam = torch.linalg.eigvals(m.double())
    return float(lam.real.sum() / lam.abs().sum())


def test_copying_scores_equal_dense_vocab_eigenvalues(model: HookedModel) -> None:
    e, u = normalized_embedding(model), unembedding(model)
    ov, qk = ov_copying_scores(model), qk_copying_scores(model)
    for layer in range(model.dims.n_layers):
        w = head_weights(model, layer)
        for h in range(model.dims.n_heads):
            full_ov = e @ w.W_V[h] @ w.W_O[h] @ u  # [vocab vocab]
            full_qk = e @ w.W_Q[h] @ w.W_K[h].T @ e.T
            assert abs(float(ov[layer, h]) - _dense_eigen(full_ov)) < 1e-3
            assert abs(float(qk[layer, h]) - _dense_eigen(full_qk)) < 1e-3


def test_copy_suppression_equals_dense_ranks(model: HookedModel) -> None:
    tokens = torch.arange(0, 101, 2)
    k = 3
    got = copy_suppression_scores(model, tokens, k=k)
    e, u = normalized_embedding(model, tokens), unembedding(model, tokens)
    for layer in range(model.dims.n_layers):
        w = head_weights(model, layer)
        for h in range(model.dims.n_heads):
            d = e @ w.W_V[h] @ w.W_O[h] @ u
            ranks = [int((row < row[i]).sum()) for i, row in enumerate(d)]  # 0 = lowest
            assert abs(float(got[layer, h]) - sum(r < k for r in ranks) / len(ranks)) < 1e-6


def test_planted_copy_suppression_and_copying() -> None:
    """A head with W_OV = -I (tied embeddings) suppresses every token; +I copies."""
    model = HookedModel(tiny_model("llama"))
    attn = model.hf.model.layers[0].self_attn
    with torch.no_grad():
        v = attn.v_proj.weight.view(2, 8, 48)
        o = attn.o_proj.weight.view(48, 6, 8)
        model.hf.model.layers[0].input_layernorm.weight.fill_(1.0)
        model.hf.model.norm.weight.fill_(1.0)
        model.hf.lm_head.weight.copy_(model.hf.model.embed_tokens.weight)
        basis = torch.linalg.qr(model.hf.model.embed_tokens.weight.T)[0][:, :8]  # [48 8]
        v[0] = basis.T  # KV group 0 serves query heads 0, 1, 2
        o[:, 0] = -basis
        o[:, 1] = basis
    cs, ov = copy_suppression_scores(model, k=5), ov_copying_scores(model)
    assert float(cs[0, 0]) > 0.5 and float(cs[0, 0]) == float(cs.max())
    assert float(ov[0, 0]) == pytest.approx(-1, abs=1e-4)
    assert float(ov[0, 1]) == pytest.approx(1, abs=1e-4)


def test_registry_lists_every_kind() -> None:
    assert set(DETECTORS) >= {*PATTERN, "copy_suppression", "ov_copying", "qk_copying"}


def test_bad_input_raises() -> None:
    model = HookedModel(tiny_model("llama"))
    with pytest.raises(MechscopeError, match="unknown head detector"):
        head_scores(model, ["inductoin"])
    with pytest.raises(MechscopeError, match="context"):
        repeated_tokens(model, 2, 40)
    with pytest.raises(MechscopeError, match="no BOS"):
        repeated_tokens(model, 2, 5, prepend_bos=True)
    with pytest.raises(MechscopeError, match="no query with a target"):
        head_scores(model, ["duplicate_token"], tokens=torch.arange(10)[None])
    with pytest.raises(MechscopeError, match="k must lie"):
        copy_suppression_scores(model, torch.arange(5), k=5)
    with pytest.raises(MechscopeError, match="composition kind"):
        composition_scores(model, "x")
    model.hf.model.layers[1].self_attn.q_proj = nn.Sequential(nn.Linear(48, 48))
    with pytest.raises(MechscopeError, match="linear q/k/v/o"):
        ov_copying_scores(model)
