"""Published dictionaries: fixtures in each author's exact layout, checked against their formulas.

Every fixture is written the way its authors publish it (Gemma Scope's ``params.npz`` and Gemma
Scope 2's ``params.safetensors``, sparsify's hookpoint folders, circuit-tracer's transcoder sets)
with random weights for a tiny Llama model. The expected reconstruction is each author's formula,
written out here independently of mechscope's SAE classes, on the model's own activations.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file

from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel
from mechscope.models.tiny import tiny_model
from mechscope.sae import load_sae, save_sae
from mechscope.sae.splice import sae_sites

D, D_SAE, K = 48, 96, 6
ATOL = 1e-5


@pytest.fixture(scope="module")
def model() -> HookedModel:
    return HookedModel(tiny_model("llama"))


@pytest.fixture(scope="module")
def cache(model: HookedModel) -> dict[str, torch.Tensor]:
    tokens = torch.randint(0, 101, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        _, c = model.run_with_cache(tokens, names="blocks.1.*")
    return dict(c.items())


def _weights(seed: int, d_in: int = D, d_out: int = D) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "W_enc": torch.randn(d_in, D_SAE, generator=g) / d_in**0.5,
        "W_dec": torch.randn(D_SAE, d_out, generator=g) / D_SAE**0.5,
        "b_enc": 0.1 * torch.randn(D_SAE, generator=g),
        "b_dec": 0.1 * torch.randn(d_out, generator=g),
        "threshold": 0.3 * torch.rand(D_SAE, generator=g),
        "skip": 0.1 * torch.randn(d_in, d_out, generator=g),
    }


def _jumprelu_recon(x, w, skip=None):  # Gemma Scope's own forward (its tutorial)
    pre = x @ w["W_enc"] + w["b_enc"]
    acts = (pre > w["threshold"]) * torch.relu(pre)
    recon = acts @ w["W_dec"] + w["b_dec"]
    return (recon if skip is None else recon + x @ skip), acts


def _npz(path: Path, w: dict[str, torch.Tensor]) -> None:
    path.parent.mkdir(parents=True)
    arrays = {k: w[k].numpy() for k in ("W_enc", "W_dec", "b_enc", "b_dec", "threshold")}
    np.savez(path, **arrays)


def _fires(acts: torch.Tensor) -> None:
    frac = (acts != 0).float().mean()
    assert 0.02 < frac < 0.98, f"fixture latents fire on {frac:.2f} of entries: not a real test"


# --- Gemma Scope -------------------------------------------------------------------------------


def test_gemma_scope_res_npz(tmp_path, model, cache):
    w = _weights(0)
    file = (
        tmp_path / "gemma-scope-2b-pt-res" / "layer_1" / "width_16k" / "average_l0_5" / "params.npz"
    )
    _npz(file, w)
    for path in (file, file.parent):
        sae = load_sae(path, model=model)
        assert sae.cfg.hook_name == "blocks.1.hook_resid_post" and sae.cfg.out_hook_name is None
        x = cache["blocks.1.hook_resid_post"]
        want, acts = _jumprelu_recon(x, w)
        _fires(acts)
        out = sae(x)
        torch.testing.assert_close(out.latents, acts, atol=ATOL, rtol=0)
        torch.testing.assert_close(out.x_hat, want, atol=ATOL, rtol=0)
        assert sae_sites(model, sae) == ("blocks.1.hook_resid_post",) * 2


def test_gemma_scope_mlp_and_att_sites(tmp_path, model):
    _npz(
        tmp_path / "gemma-scope-9b-pt-mlp" / "layer_2" / "width_16k" / "a" / "params.npz",
        _weights(1),
    )
    sae = load_sae(tmp_path / "gemma-scope-9b-pt-mlp" / "layer_2" / "width_16k" / "a")
    assert sae.cfg.hook_name == "blocks.2.hook_mlp_out"
    # as the Hugging Face cache lays a release out
    cached = tmp_path / "models--google--gemma-scope-2b-pt-res" / "snapshots" / "0a1b2c" / "layer_2"
    _npz(cached / "width_16k" / "average_l0_9" / "params.npz", _weights(1))
    assert (
        load_sae(cached / "width_16k" / "average_l0_9").cfg.hook_name == "blocks.2.hook_resid_post"
    )
    att = tmp_path / "gemma-scope-2b-pt-att" / "layer_0" / "width_16k" / "a" / "params.npz"
    _npz(att, _weights(2))  # d_in 48 = 6 heads x 8: hook_z flattened
    assert load_sae(att, model=model).cfg.hook_name == "blocks.0.attn.hook_z"


def test_gemma_scope_transcoder_folds_the_norm_gain(tmp_path, model, cache):
    w = _weights(3)
    file = tmp_path / "gemma-scope-2b-pt-transcoders" / "layer_1" / "width_16k" / "a" / "params.npz"
    _npz(file, w)
    bare = load_sae(file)
    assert (bare.cfg.hook_name, bare.cfg.out_hook_name) == (
        "blocks.1.ln2.hook_normalized",
        "blocks.1.hook_mlp_out",
    )
    sae = load_sae(file, model=model)
    assert (sae.cfg.hook_name, sae.cfg.out_hook_name) == (
        "blocks.1.mlp.hook_in",
        "blocks.1.hook_mlp_out",
    )
    # the transcoder's input: the pre-MLP RMSNorm output before its gain, written out
    r = cache["blocks.1.hook_resid_mid"]
    normalized = r / (r.pow(2).mean(-1, keepdim=True) + model.hf.config.rms_norm_eps).sqrt()
    want, acts = _jumprelu_recon(normalized, w)
    _fires(acts)
    got = sae(cache["blocks.1.mlp.hook_in"])
    torch.testing.assert_close(got.latents, acts, atol=ATOL, rtol=1e-5)
    torch.testing.assert_close(got.x_hat, want, atol=ATOL, rtol=1e-5)
    assert sae_sites(model, sae) == ("blocks.1.mlp.hook_in", "blocks.1.hook_mlp_out")


def test_gemma_scope_2_safetensors_with_affine_skip(tmp_path, model, cache):
    w = _weights(4)
    folder = tmp_path / "resid_post" / "layer_1_width_16k_l0_medium"
    folder.mkdir(parents=True)
    tensors = {"w_enc": w["W_enc"], "w_dec": w["W_dec"], "b_enc": w["b_enc"], "b_dec": w["b_dec"]}
    tensors |= {"threshold": w["threshold"], "affine_skip_connection": w["skip"]}
    save_file(tensors, folder / "params.safetensors")
    sae = load_sae(folder, model=model)
    assert sae.cfg.hook_name == "blocks.1.hook_resid_post"
    x = cache["blocks.1.hook_resid_post"]
    want, acts = _jumprelu_recon(x, w, skip=w["skip"])
    _fires(acts)
    torch.testing.assert_close(sae(x).x_hat, want, atol=ATOL, rtol=0)
    with pytest.raises(MechscopeError, match="no skip connection"):
        save_sae(sae, tmp_path / "out")
    # a Gemma Scope 2 transcoder folder does not say its sites: site= and out_site= do
    other = tmp_path / "transcoder" / "layer_1_width_16k_l0_small"
    other.mkdir(parents=True)
    save_file(tensors, other / "params.safetensors")
    with pytest.raises(MechscopeError, match="pass site="):
        load_sae(other)
    tc = load_sae(other, model=model, site="blocks.1.mlp.hook_in", out_site="blocks.1.hook_mlp_out")
    x = cache["blocks.1.mlp.hook_in"]
    torch.testing.assert_close(
        tc(x).x_hat, _jumprelu_recon(x, w, skip=w["skip"])[0], atol=ATOL, rtol=0
    )


def test_npz_is_loaded_without_pickle(tmp_path):
    file = tmp_path / "gemma-scope-2b-pt-res" / "layer_0" / "w" / "a" / "params.npz"
    file.parent.mkdir(parents=True)
    np.savez(file, W_enc=np.array([{"a": 1}], dtype=object))
    with pytest.raises(MechscopeError, match="cannot read .*params.npz"):
        load_sae(file)


# --- sparsify ----------------------------------------------------------------------------------


def _sparsify(folder: Path, w: dict, transcode: bool, skip: bool) -> None:
    folder.mkdir(parents=True)
    cfg = {
        "activation": "topk",
        "expansion_factor": 2,
        "normalize_decoder": True,
        "num_latents": D_SAE,
    }
    cfg |= {"k": K, "multi_topk": False, "skip_connection": skip, "transcode": transcode, "d_in": D}
    (folder / "cfg.json").write_text(json.dumps(cfg))
    tensors = {"encoder.weight": w["W_enc"].T.contiguous(), "encoder.bias": w["b_enc"]}
    tensors |= {"W_dec": w["W_dec"], "b_dec": w["b_dec"]}
    if skip:
        tensors["W_skip"] = w["skip"]
    save_file(tensors, folder / "sae.safetensors")


def _sparsify_recon(x, w, transcode, skip):  # sparsify's SparseCoder.forward, written out
    enc_in = x if transcode else x - w["b_dec"]
    pre = torch.relu(enc_in @ w["W_enc"] + w["b_enc"])
    top, idx = pre.topk(K, dim=-1)
    acts = torch.zeros_like(pre).scatter(-1, idx, top)
    recon = acts @ w["W_dec"] + w["b_dec"]
    return (recon + x @ w["skip"].T if skip else recon), acts


def test_sparsify_sae(tmp_path, model, cache):
    w = _weights(5)
    _sparsify(tmp_path / "sae-tiny" / "layers.1", w, transcode=False, skip=False)
    sae = load_sae(tmp_path / "sae-tiny" / "layers.1", model=model)
    assert sae.cfg.hook_name == "blocks.1.hook_resid_post" and sae.cfg.arch == "topk"
    x = cache["blocks.1.hook_resid_post"]
    want, acts = _sparsify_recon(x, w, False, False)
    out = sae(x)
    torch.testing.assert_close(out.latents, acts, atol=ATOL, rtol=0)
    torch.testing.assert_close(out.x_hat, want, atol=ATOL, rtol=0)


def test_sparsify_skip_transcoder_on_the_mlp(tmp_path, model, cache):
    w = _weights(6)
    _sparsify(tmp_path / "tc" / "layers.1.mlp", w, transcode=True, skip=True)
    sae = load_sae(tmp_path / "tc" / "layers.1.mlp", model=model)
    assert (sae.cfg.hook_name, sae.cfg.out_hook_name) == (
        "blocks.1.mlp.hook_in",
        "blocks.1.hook_mlp_out",
    )
    x = cache["blocks.1.mlp.hook_in"]
    want, _ = _sparsify_recon(x, w, True, True)
    torch.testing.assert_close(sae(x).x_hat, want, atol=ATOL, rtol=0)
    _sparsify(tmp_path / "tc" / "layers.2", w, transcode=True, skip=False)
    whole = load_sae(tmp_path / "tc" / "layers.2")
    assert (whole.cfg.hook_name, whole.cfg.out_hook_name) == (
        "blocks.2.hook_resid_pre",
        "blocks.2.hook_resid_post",
    )


# --- circuit-tracer ----------------------------------------------------------------------------


def _tracer_set(folder: Path, w0: dict, w1: dict) -> None:
    folder.mkdir(parents=True)
    conf = {"model_name": "tiny-llama", "model_kind": "transcoder_set"}
    conf |= {"feature_input_hook": "mlp.hook_in", "feature_output_hook": "mlp.hook_out"}
    (folder / "config.yaml").write_text(yaml.safe_dump(conf))
    for i, w in enumerate((w0, w1)):
        tensors = {"W_enc": w["W_enc"].T.contiguous(), "W_dec": w["W_dec"], "b_enc": w["b_enc"]}
        tensors["b_dec"] = w["b_dec"]
        if i == 0:
            tensors["W_skip"] = w["skip"]
        else:
            tensors["activation_function.threshold"] = w["threshold"]
        save_file(tensors, folder / f"layer_{i}.safetensors")


def test_circuit_tracer_transcoder_set(tmp_path, model, cache):
    w0, w1 = _weights(7), _weights(8)
    _tracer_set(tmp_path / "set", w0, w1)
    with pytest.raises(
        MechscopeError, match=r"pick a transcoder with layer= \(this set has \[0, 1\]\)"
    ):
        load_sae(tmp_path / "set")
    sae = load_sae(tmp_path / "set", model=model, layer=1)
    assert sae.cfg.arch == "jumprelu"
    assert (sae.cfg.hook_name, sae.cfg.out_hook_name) == (
        "blocks.1.mlp.hook_in",
        "blocks.1.hook_mlp_out",
    )
    x = cache["blocks.1.mlp.hook_in"]
    pre = torch.nn.functional.linear(
        x, w1["W_enc"].T.contiguous(), w1["b_enc"]
    )  # SingleLayerTranscoder
    acts = pre * (pre > w1["threshold"])
    _fires(acts)
    torch.testing.assert_close(sae(x).x_hat, acts @ w1["W_dec"] + w1["b_dec"], atol=ATOL, rtol=0)
    relu = load_sae(tmp_path / "set" / "layer_0.safetensors", model=model)
    assert relu.cfg.arch == "relu" and relu.cfg.hook_name == "blocks.0.mlp.hook_in"
    with torch.no_grad():
        _, c0 = model.run_with_cache(torch.tensor([[3, 1, 4, 1, 5]]), names="blocks.0.mlp.hook_in")
    x = c0["blocks.0.mlp.hook_in"]
    pre = torch.nn.functional.linear(x, w0["W_enc"].T.contiguous(), w0["b_enc"])
    want = torch.relu(pre) @ w0["W_dec"] + w0["b_dec"] + x @ w0["skip"].T
    torch.testing.assert_close(relu(x).x_hat, want, atol=ATOL, rtol=0)


def test_circuit_tracer_cross_layer_is_refused(tmp_path):
    (tmp_path / "clt").mkdir()
    (tmp_path / "clt" / "config.yaml").write_text("model_kind: cross_layer_transcoder\n")
    with pytest.raises(MechscopeError, match="cross_layer_transcoder' is not supported"):
        load_sae(tmp_path / "clt", layer=0)


# --- dispatch and errors -----------------------------------------------------------------------


def test_saelens_folders_still_load(tmp_path):
    from mechscope.sae import SAE, SAEConfig

    sae = SAE(
        SAEConfig(arch="topk", d_in=D, d_sae=D_SAE, k=K, hook_name="blocks.0.hook_resid_post")
    )
    save_sae(sae, tmp_path / "s")
    back = load_sae(tmp_path / "s", format="saelens")
    x = torch.randn(3, D)
    torch.testing.assert_close(back(x).x_hat, sae(x).x_hat, atol=ATOL, rtol=1e-5)
    assert load_sae(tmp_path / "s").cfg.hook_name == "blocks.0.hook_resid_post"


def test_wrong_width_or_site_is_one_line(tmp_path, model):
    wide = _weights(9, d_in=D + 2, d_out=D + 2)
    _npz(tmp_path / "gemma-scope-2b-pt-res" / "layer_1" / "w" / "a" / "params.npz", wide)
    with pytest.raises(
        MechscopeError, match="reads width 50 but blocks.1.hook_resid_post is 48 wide"
    ):
        load_sae(tmp_path / "gemma-scope-2b-pt-res" / "layer_1" / "w" / "a", model=model)
    _npz(tmp_path / "gemma-scope-2b-pt-res" / "layer_7" / "w" / "a" / "params.npz", _weights(9))
    with pytest.raises(
        MechscopeError,
        match=r"reads blocks.7.hook_resid_post, which this model has not \(3 layers\)",
    ):
        load_sae(tmp_path / "gemma-scope-2b-pt-res" / "layer_7" / "w" / "a", model=model)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MechscopeError, match="in no known SAE layout"):
        load_sae(tmp_path / "empty")
    with pytest.raises(MechscopeError, match="unknown SAE format 'dictlearn'"):
        load_sae(tmp_path / "empty", format="dictlearn")
    _npz(tmp_path / "somewhere" / "params.npz", _weights(9))
    with pytest.raises(MechscopeError, match="pass site="):
        load_sae(tmp_path / "somewhere")
    assert (
        load_sae(tmp_path / "somewhere", site="blocks.0.hook_mlp_out").cfg.hook_name
        == "blocks.0.hook_mlp_out"
    )
