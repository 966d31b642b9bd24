"""SAELens file layout: fixtures laid out as SAELens 6.x writes them, round trips, errors.

The cfg.json dicts below copy the key sets SAELens 6.18 writes with ``save_inference_model``
(``SAEConfig`` fields + ``architecture`` + ``metadata`` from ``from_sae_runner_config``), and one
pre-6.0 flat config as published for ``gpt2-small-res-jb``. Expected activations are computed
here with SAELens's formulas written out independently of mechscope's code.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mechscope.errors import MechscopeError
from mechscope.sae import SAE, SAEConfig, load_sae, save_sae

META = {
    "sae_lens_version": "6.18.0",
    "sae_lens_training_version": "6.18.0",
    "model_name": "gpt2-small",
    "hook_name": "blocks.6.hook_resid_post",
    "hook_head_index": None,
    "context_size": 128,
    "prepend_bos": True,
    "seqpos_slice": [None],
    "model_from_pretrained_kwargs": {},
}
BASE = {
    "d_in": 16,
    "d_sae": 40,
    "dtype": "float32",
    "device": "cpu",
    "apply_b_dec_to_input": True,
    "normalize_activations": "none",
    "reshape_activations": "none",
}
SAELENS_CFGS = {
    "standard": {**BASE, "metadata": META, "architecture": "standard"},
    "topk": {
        **BASE,
        "k": 5,
        "rescale_acts_by_decoder_norm": True,
        "metadata": META,
        "architecture": "topk",
    },
    "jumprelu": {**BASE, "metadata": META, "architecture": "jumprelu"},
    "transcoder": {
        **BASE,
        "apply_b_dec_to_input": False,
        "d_out": 12,
        "metadata": {
            **META,
            "hook_name": "blocks.6.ln2.hook_normalized",
            "hook_name_out": "blocks.6.hook_mlp_out",
        },
        "architecture": "transcoder",
    },
}
PRE_6 = {  # a pre-6.0 flat config (gpt2-small-res-jb's keys)
    "d_in": 16,
    "d_sae": 40,
    "dtype": "torch.float32",
    "device": "cpu",
    "model_name": "gpt2-small",
    "hook_point": "blocks.0.hook_resid_pre",
    "hook_point_layer": 0,
    "hook_point_head_index": None,
    "activation_fn": "relu",
    "apply_b_dec_to_input": True,
    "context_size": 128,
    "dataset_path": "Skylion007/openwebtext",
    "normalize_activations": "none",
    "prepend_bos": True,
    "sae_lens_training_version": None,
}
NAMES = {"standard": set(), "topk": set(), "jumprelu": {"threshold"}, "transcoder": set()}


def write_saelens(folder: Path, cfg: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    d_in, d_sae, d_out = cfg["d_in"], cfg["d_sae"], cfg.get("d_out", cfg["d_in"])
    tensors = {
        "W_enc": torch.randn(d_in, d_sae, generator=g) / 4,
        "b_enc": torch.randn(d_sae, generator=g) / 10,
        "W_dec": torch.randn(d_sae, d_out, generator=g) / 4,
        "b_dec": torch.randn(d_out, generator=g) / 10,
    }
    if cfg["architecture"] == "jumprelu":
        tensors["threshold"] = torch.rand(d_sae, generator=g) / 5
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, folder / "sae_weights.safetensors")
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return tensors


def saelens_forward(
    arch: str, t: dict[str, torch.Tensor], x: torch.Tensor, cfg: dict
) -> torch.Tensor:
    """SAELens's inference forward, written out."""
    sae_in = x - t["b_dec"] if cfg.get("apply_b_dec_to_input", True) else x
    pre = sae_in @ t["W_enc"] + t["b_enc"]
    if arch == "topk":
        if cfg.get("rescale_acts_by_decoder_norm"):
            pre = pre * t["W_dec"].norm(dim=-1)
        vals, idx = pre.topk(cfg["k"], dim=-1)
        acts = torch.zeros_like(pre).scatter(-1, idx, vals.relu())
        if cfg.get("rescale_acts_by_decoder_norm"):
            acts = acts / t["W_dec"].norm(dim=-1)
    elif arch == "jumprelu":
        acts = pre.relu() * (pre > t["threshold"])
    else:
        acts = pre.relu()
    return acts @ t["W_dec"] + t["b_dec"]


@pytest.mark.parametrize("arch", sorted(SAELENS_CFGS))
def test_load_saelens_layout(tmp_path, arch):
    cfg = SAELENS_CFGS[arch]
    tensors = write_saelens(tmp_path / "in", cfg)
    sae = load_sae(tmp_path / "in")
    assert not sae.training
    assert sae.cfg.d_in == 16 and sae.cfg.d_sae == 40
    assert sae.cfg.hook_name == cfg["metadata"]["hook_name"] and sae.cfg.model_name == "gpt2-small"
    assert sae.cfg.is_transcoder == (arch == "transcoder")
    if arch == "transcoder":
        assert sae.cfg.out_hook_name == "blocks.6.hook_mlp_out" and sae.cfg.width_out == 12
    if arch == "topk":
        assert sae.cfg.k == 5
    x = torch.randn(7, 16)
    torch.testing.assert_close(
        sae(x).x_hat, saelens_forward(arch, tensors, x, cfg), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("arch", sorted(SAELENS_CFGS))
def test_round_trip_keeps_saelens_keys(tmp_path, arch):
    cfg = SAELENS_CFGS[arch]
    write_saelens(tmp_path / "a", cfg)
    first = load_sae(tmp_path / "a")
    save_sae(first, tmp_path / "b")
    written = json.loads((tmp_path / "b" / "cfg.json").read_text())
    # every key SAELens writes is there with the same value (metadata: the keys mechscope knows)
    for key, value in cfg.items():
        if key not in ("metadata", "rescale_acts_by_decoder_norm"):
            assert written[key] == value, key
    for key in (
        "model_name",
        "hook_name",
        "hook_head_index",
        "sae_lens_version",
        "model_from_pretrained_kwargs",
    ):
        assert key in written["metadata"]
    assert int(written["metadata"]["sae_lens_version"].split(".")[0]) >= 6  # read as a 6.x config
    weights = load_file(tmp_path / "b" / "sae_weights.safetensors")
    assert set(weights) == {"W_enc", "b_enc", "W_dec", "b_dec"} | NAMES[arch]
    second = load_sae(tmp_path / "b")
    save_sae(second, tmp_path / "c")
    again = load_file(tmp_path / "c" / "sae_weights.safetensors")
    for name, value in weights.items():
        torch.testing.assert_close(again[name], value, rtol=1e-6, atol=0)
    assert json.loads((tmp_path / "c" / "cfg.json").read_text()) == written
    x = torch.randn(3, 16)
    torch.testing.assert_close(second(x).x_hat, first(x).x_hat)


def test_pre_6_flat_config(tmp_path):
    tensors = write_saelens(tmp_path, {**PRE_6, "architecture": "standard"})
    cfg = dict(PRE_6)  # the old files had no architecture key
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    sae = load_sae(tmp_path)
    assert sae.cfg.arch == "relu" and sae.cfg.hook_name == "blocks.0.hook_resid_pre"
    assert sae.cfg.dataset == "Skylion007/openwebtext"
    x = torch.randn(2, 16)
    torch.testing.assert_close(sae(x).x_hat, saelens_forward("standard", tensors, x, cfg))


@pytest.mark.parametrize("arch", ["relu", "topk", "batchtopk", "jumprelu"])
def test_our_sae_saves_and_reloads_the_same_function(tmp_path, arch):
    cfg = SAEConfig(
        arch=arch, d_in=16, d_sae=40, k=4 if "topk" in arch else None, hook_name="blocks.3.hook_resid_post",
        normalize_scale=0.37, model_name="smollm2-135m", dataset="builtin", include_first=False,
    )  # fmt: skip
    sae = SAE(cfg, seed=3).eval()
    with torch.no_grad():
        sae.b_dec.normal_(), sae.b_enc.normal_(std=0.1)
    if arch == "batchtopk":
        sae.threshold.fill_(0.05)
    save_sae(sae, tmp_path)
    written = json.loads((tmp_path / "cfg.json").read_text())
    assert written["normalize_activations"] == "none"  # the scale is folded into the weights
    assert written["architecture"] == {"relu": "standard", "batchtopk": "jumprelu"}.get(arch, arch)
    back = load_sae(tmp_path)
    assert back.cfg.arch == arch and back.cfg.normalize_scale is None
    assert (
        back.cfg.k == cfg.k
        and back.cfg.hook_name == cfg.hook_name
        and back.cfg.model_name == "smollm2-135m"
        and back.cfg.include_first is False  # trained without each window's first position
    )
    x = torch.randn(6, 16) * 3
    torch.testing.assert_close(back(x).x_hat, sae(x).x_hat, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(back.encode(x), sae.encode(x), rtol=1e-4, atol=1e-5)


def test_load_errors(tmp_path):
    with pytest.raises(MechscopeError, match="no cfg.json"):
        load_sae(tmp_path / "missing")
    write_saelens(tmp_path / "ok", SAELENS_CFGS["standard"])
    (tmp_path / "ok" / "sae_weights.safetensors").unlink()
    with pytest.raises(MechscopeError, match="no sae_weights.safetensors"):
        load_sae(tmp_path / "ok")

    bad = copy.deepcopy(SAELENS_CFGS["standard"])
    write_saelens(tmp_path / "shape", bad)
    bad["d_sae"] = 41
    (tmp_path / "shape" / "cfg.json").write_text(json.dumps(bad))
    with pytest.raises(
        MechscopeError, match=r"W_enc has shape \[16, 40\] but cfg.json implies \[16, 41\]"
    ):
        load_sae(tmp_path / "shape")

    gated = {**SAELENS_CFGS["standard"], "architecture": "gated"}
    write_saelens(tmp_path / "gated", gated)
    with pytest.raises(MechscopeError, match="unsupported SAE architecture 'gated'"):
        load_sae(tmp_path / "gated")

    write_saelens(tmp_path / "jr", SAELENS_CFGS["jumprelu"])
    weights = load_file(tmp_path / "jr" / "sae_weights.safetensors")
    del weights["threshold"]
    save_file(weights, tmp_path / "jr" / "sae_weights.safetensors")
    with pytest.raises(MechscopeError, match="no tensor 'threshold'"):
        load_sae(tmp_path / "jr")

    (tmp_path / "ok" / "sae_weights.safetensors").write_bytes(b"garbage")
    (tmp_path / "ok" / "cfg.json").write_text("{not json")
    with pytest.raises(MechscopeError, match="not valid JSON"):
        load_sae(tmp_path / "ok")


def test_jumprelu_thresholds_must_be_non_negative(tmp_path):
    import pytest
    import torch
    from safetensors.torch import load_file, save_file

    from mechscope.errors import MechscopeError
    from mechscope.sae import SAE, SAEConfig, load_sae, save_sae

    sae = SAE(SAEConfig(arch="jumprelu", d_in=8, d_sae=16, hook_name="blocks.0.hook_resid_post"))
    save_sae(sae, tmp_path)
    tensors = load_file(tmp_path / "sae_weights.safetensors")
    tensors["threshold"][:3] = 0.0  # zero thresholds load (latents behave as ReLU)
    save_file(tensors, tmp_path / "sae_weights.safetensors")
    x = torch.randn(5, 8)
    loaded = load_sae(tmp_path)
    pre = loaded.pre_activations(x)
    assert torch.equal(loaded.encode(x)[:, :3], pre[:, :3].relu())
    tensors["threshold"][0] = -1.0
    save_file(tensors, tmp_path / "sae_weights.safetensors")
    with pytest.raises(MechscopeError, match="thresholds .* must be finite and >= 0"):
        load_sae(tmp_path)
