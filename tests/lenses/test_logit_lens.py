"""The logit lens: its last layer is the model's output, for every family; inputs are checked."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mechscope import HookedModel, MechscopeError
from mechscope.lenses import LENSES, lens_logits, logit_lens
from mechscope.models.tiny import CONFIGS, tiny_model


@pytest.fixture(scope="module")
def llama() -> HookedModel:
    return HookedModel(tiny_model("llama"))


def tokens(n: int = 9, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 101, (n,), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_last_layer_is_the_model_output(kind: str) -> None:
    model = HookedModel(tiny_model(kind))
    t = tokens()
    with torch.inference_mode():
        expected = model(t)[0]  # [pos d_vocab]
    lens = lens_logits(model, t)
    assert lens.shape == (model.dims.n_layers, t.shape[0], model.dims.d_vocab)
    torch.testing.assert_close(lens[-1], expected, atol=1e-5, rtol=0)


def test_result_matches_the_logits(llama: HookedModel) -> None:
    t, target = tokens(), 7
    logits = lens_logits(llama, t)  # [layer pos d_vocab]
    result = logit_lens(llama, t, target=target, top_k=3)
    probs = logits.softmax(-1)
    top = probs.topk(3, dim=-1)
    np.testing.assert_array_equal(result.top_ids, top.indices.numpy())
    np.testing.assert_allclose(result.top_probs, top.values.numpy(), atol=1e-6)
    rank = (logits > logits[..., target, None]).sum(-1)
    np.testing.assert_array_equal(result.target_rank, rank.numpy())
    np.testing.assert_allclose(result.target_prob, probs[..., target].numpy(), atol=1e-6)
    np.testing.assert_array_equal(result.tokens, t.numpy())
    np.testing.assert_array_equal(result.layers, np.arange(llama.dims.n_layers))


def test_positions_read_a_subset(llama: HookedModel) -> None:
    t = tokens()
    full = logit_lens(llama, t, target=3)
    part = logit_lens(llama, t, target=3, positions=[-2, 0])
    np.testing.assert_array_equal(part.positions, [7, 0])
    np.testing.assert_array_equal(part.top_ids, full.top_ids[:, [7, 0]])
    np.testing.assert_array_equal(part.target_rank, full.target_rank[:, [7, 0]])


def test_resid_pre_starts_at_the_embedding(llama: HookedModel) -> None:
    t = tokens()
    pre, post = lens_logits(llama, t, site="resid_pre"), lens_logits(llama, t)
    torch.testing.assert_close(pre[1:], post[:-1])


def test_to_dict_is_json(llama: HookedModel) -> None:
    result = logit_lens(llama, tokens(), target=1)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["target"] == 1 and len(data["top_ids"]) == llama.dims.n_layers
    assert logit_lens(llama, tokens()).to_dict()["target_rank"] is None
    assert LENSES["logit"] is logit_lens
    assert "rows" not in data and data["mean_kl"] == result.mean_kl().tolist()
    rows = json.loads(json.dumps(result.to_dict(decode=lambda i: f"<{i}>")))["rows"]
    assert [r["layer"] for r in rows] == result.layers.tolist()
    last = rows[-1]
    best = last["top"][-1][0]  # layer n-1, last position, top-1
    assert best == {
        "id": int(result.top_ids[-1, -1, 0]),
        "token": f"<{result.top_ids[-1, -1, 0]}>",
        "prob": float(result.top_probs[-1, -1, 0]),
    }
    assert last["target_rank"] == result.target_rank[-1].tolist()
    assert last["mean_kl"] == float(result.kl[-1].mean())


@pytest.mark.parametrize(
    "kwargs",
    [{"target": 101}, {"target": -1}, {"top_k": 0}, {"site": "mlp_out"}, {"positions": [9]}],
)
def test_bad_arguments_raise(llama: HookedModel, kwargs: dict) -> None:
    with pytest.raises(MechscopeError):
        logit_lens(llama, tokens(), **kwargs)


def test_one_prompt_only(llama: HookedModel) -> None:
    with pytest.raises(MechscopeError, match="one prompt"):
        logit_lens(llama, torch.zeros(2, 4, dtype=torch.long))


def test_parallel_models_have_no_resid_mid() -> None:
    with pytest.raises(MechscopeError, match="resid_mid"):
        logit_lens(HookedModel(tiny_model("gpt_neox")), tokens(), site="resid_mid")
