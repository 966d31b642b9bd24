"""Crosscoders: relative decoder norms, latent scaling, and the planted finetune's latent."""

from __future__ import annotations

import pytest
import torch
from diff_truth import TINY_PLANT

from mechscope.corpus import from_files
from mechscope.diff.crosscoder import (
    CrosscoderInfo,
    classify,
    latent_scaling,
    make_crosscoder,
    relative_norms,
)
from mechscope.diff.crosscoder_train import evaluate_crosscoder, train_crosscoder
from mechscope.errors import MechscopeError
from mechscope.sae import SAE, load_sae
from mechscope.toys.finetune import planted_spans

TRAIN = {"layer": 1, "expansion": 2, "k": 8, "n_tokens": 20_000, "batch_size": 256, "seq_len": 32}


def test_relative_norm_bands() -> None:
    sae = make_crosscoder("batchtopk", 4, 3, k=1)
    with torch.no_grad():
        sae.W_dec.zero_()
        sae.W_dec[0, :4] = 1.0  # base only
        sae.W_dec[1, 4:] = 1.0  # finetune only
        sae.W_dec[2] = 1.0  # shared
    delta = relative_norms(sae)
    assert delta.tolist() == pytest.approx([0.0, 1.0, 0.5])
    assert classify(delta) == {"base-only": [0], "shared": [2], "finetune-only": [1]}


def _scaling_pair(d: int, base_latent: bool) -> tuple[SAE, torch.Tensor]:
    """Latent 0 reads and writes the finetune half's first coordinate (no base decoder); the
    base half carries 0.3 of it. With ``base_latent``, latent 1 (base-only) reconstructs that
    copy; without, nothing does and it stays in the base's error."""
    sae = make_crosscoder("l1", d, 2, k=1).eval()
    f = torch.rand(200, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for p in (sae.W_enc, sae.b_enc, sae.W_dec):
            p.zero_()
        sae.b_dec.fill_(2.0)  # a mean in both halves: it must not count as the latent's
        sae.W_enc[d, 0] = 1.0
        sae.W_dec[0, d] = 1.0
        if base_latent:
            sae.W_enc[0, 1] = 1.0
            sae.W_dec[1, 0] = 1.0
    x = torch.full((200, 2 * d), 2.0)
    x[:, d] += f
    x[:, 0] += 0.3 * f
    return sae, x


def test_latent_scaling_recovers_planted_ratio() -> None:
    """Minder et al.'s two artifacts, planted: the base carries 0.3 of the finetune-only latent's
    direction, in its reconstruction error (Complete Shrinkage: ``nu_eps`` = 0.3, ``nu_r`` = 0) or
    through another latent (Latent Decoupling: ``nu_r`` = 0.3, ``nu_eps`` = 0)."""
    sae, x = _scaling_pair(6, base_latent=False)
    scores = latent_scaling(sae, x, [0])[0]
    assert scores["nu_eps"] == pytest.approx(0.3, abs=1e-5)
    assert scores["nu_r"] == pytest.approx(0.0, abs=1e-5)
    sae, x = _scaling_pair(6, base_latent=True)
    scores = latent_scaling(sae, x, [0])[0]
    assert scores["nu_r"] == pytest.approx(0.3, abs=1e-5)
    assert scores["nu_eps"] == pytest.approx(0.0, abs=1e-5)


@pytest.fixture(scope="module")
def crosscoders(truth, truth_models, tmp_path_factory) -> dict[str, dict]:
    corpus = from_files(truth["planted"] / "eval.jsonl")
    spans = {i: planted_spans(t, TINY_PLANT) for i, t in enumerate(corpus.documents("test"))}
    out = {}
    for kind in ("planted", "control"):
        folder = tmp_path_factory.mktemp(f"cc-{kind}")
        base, ft = truth_models["base"], truth_models[kind]
        sae, info, _ = train_crosscoder(base, ft, folder, corpus=corpus, quiet=True, **TRAIN)
        report = evaluate_crosscoder(
            sae, info, base, ft, corpus, spans=spans, seq_len=32, split="test"
        )
        out[kind] = {"folder": folder, "sae": sae, "report": report}
    return out


def test_a_latent_fires_on_the_planted_tokens(crosscoders) -> None:
    best = crosscoders["planted"]["report"]["best_planted"]
    assert best["precision"] > 0.8 and best["recall"] > 0.5
    # No assertion on its relative norm: this tiny finetune rewrote the whole residual stream
    # (centred per-token cosine base vs finetune -0.03 at layer 1), so every latent's two decoders
    # are unrelated and the norm is 0.43-0.60 over seeds 0-2 (docs/diff.md)
    control = crosscoders["control"]["report"]["best_planted"]
    assert control["f1"] < 0.3


def test_each_model_is_scaled_by_its_varying_part(crosscoders, truth_models) -> None:
    """Each half of the input, minus its mean, has unit mean squared norm; b_dec starts there."""
    from mechscope.activations.store import ActivationStore
    from mechscope.diff.crosscoder_train import centred_scales

    run = crosscoders["planted"]
    info = CrosscoderInfo.load(run["folder"])
    for name, scale in (("acts-base", info.scale_base), ("acts-finetuned", info.scale_finetuned)):
        store = ActivationStore.open(run["folder"] / name)
        x = torch.cat(list(store.batches(4096, shuffle=False))).double()
        centred = (x - x.mean(0)) * scale
        assert float(centred.pow(2).sum(-1).mean()) == pytest.approx(1.0, rel=1e-4)
        assert centred_scales(store)[1] == pytest.approx(scale)


def test_crosscoder_folder_is_an_sae_folder(crosscoders, truth_models) -> None:
    run = crosscoders["planted"]
    loaded = load_sae(run["folder"])
    info = CrosscoderInfo.load(run["folder"])
    assert info.d_model == 48 and loaded.cfg.d_in == 96 and info.layer == 1
    x = torch.randn(5, 96)
    torch.testing.assert_close(loaded.encode(x), run["sae"].eval().encode(x), atol=1e-5, rtol=0)
    assert not (run["folder"] / "checkpoints" / "latest.json").exists()


def test_crosscoder_needs_equal_widths(llama, gpt2_pairs, tmp_path) -> None:
    from mechscope.diff.crosscoder_train import check_widths

    with pytest.raises(MechscopeError, match="one width"):
        check_widths(llama, gpt2_pairs)


def test_sae_features_of_the_difference() -> None:
    """The SAE latent whose decoder row is the difference's direction comes first."""
    from mechscope.diff.lens import sae_features
    from mechscope.diff.run import _sae_layer
    from mechscope.sae import SAEConfig

    sae = SAE(SAEConfig(arch="topk", d_in=8, d_sae=16, k=2, hook_name="blocks.3.hook_resid_post"))
    delta = 2.5 * sae.W_dec[5].detach() + 0.01 * torch.randn(8)
    top = sae_features(sae, delta, k=3)
    assert top[0][0] == 5 and top[0][1] > 0.99
    assert (
        _sae_layer("blocks.3.hook_resid_post") == 3 and _sae_layer("blocks.3.hook_resid_pre") == 2
    )
    with pytest.raises(MechscopeError, match="residual-stream SAEs"):
        _sae_layer("blocks.3.hook_mlp_out")


# -- the narrow planted finetune: a finetune-only latent on the trigger -------------------------

NARROW_FT = {"steps": 300, "words": 12, "seq_len": 32, "eval_docs": 400, "layers": (0, 1)}
NARROW_FT |= {"rank": 4, "leak": 3.0}
NARROW_CC = {"variant": "l1", "layer": 1, "expansion": 4, "k": 8, "n_tokens": 15_000}
NARROW_CC |= {"batch_size": 256, "seq_len": 32, "steps": 400, "lr": 3e-3}
NARROW_SITES = ("hook_resid_post", "hook_mlp_out")


def finetune_only(report: dict, nu: float = 0.3) -> list[dict]:
    """The latents in the finetune-only band whose latent scaling says the base does not carry
    them (``nu_eps`` below ``nu``; Minder et al. 2025)."""
    return [r for r in report["finetune_only"] if abs(r["nu_eps"]) < nu]


@pytest.fixture(scope="module")
def narrow(tmp_path_factory) -> dict[str, dict]:
    """L1 crosscoders at layer 1 of the narrow truth (diff_truth.narrow_truth), read on every
    document of its eval.jsonl against the trigger words."""
    from diff_truth import narrow_truth

    import mechscope
    from mechscope.toys.finetune import FinetuneConfig

    paths = narrow_truth(tmp_path_factory.mktemp("narrow"), FinetuneConfig.narrow(**NARROW_FT))
    models = {name: mechscope.load(str(path), progress=False) for name, path in paths.items()}
    corpus = from_files(paths["planted"] / "eval.jsonl")
    reply = len(TINY_PLANT.reply)
    spans = {
        i: [(a, b - reply) for a, b in planted_spans(text, TINY_PLANT)]
        for i, text in enumerate(corpus.documents("all"))
    }
    out = {}
    for site in NARROW_SITES:
        for kind in ("planted", "control"):
            folder = tmp_path_factory.mktemp(f"narrow-cc-{kind}")
            base, ft = models["base"], models[kind]
            kw = {"corpus": corpus, "site": site, "quiet": True, **NARROW_CC}
            sae, info, _ = train_crosscoder(base, ft, folder, **kw)
            kw = {"spans": spans, "seq_len": 32, "split": "all", "n_tokens": 15_000, "top": 50}
            out[site, kind] = evaluate_crosscoder(sae, info, base, ft, corpus, **kw)
    return out


@pytest.mark.slow  # about 35 CPU-s: a base, two finetunes, four crosscoders
@pytest.mark.parametrize("site", NARROW_SITES)
def test_a_finetune_only_latent_fires_on_the_trigger(narrow, site) -> None:
    """Seeds 0-2 of a larger run (1,000 documents, 1,000 steps; both sites):
    benchmarks/bench_diff_narrow_tiny.py, docs/diff.md. The latent fires weakly on many ordinary
    tokens too (the low-rank update leaks a little there), so precision is scored on strong
    firing. At the MLP output the update is written directly (the leak gets latents of its own)."""
    found = [r for r in finetune_only(narrow[site, "planted"]) if r["recall"] > 0.5]
    assert found, narrow[site, "planted"]["finetune_only"]
    best = max(found, key=lambda r: r["auroc"])
    assert best["delta"] >= 0.9 and best["auroc"] > 0.8 and abs(best["nu_r"]) < 0.3
    assert best["strong_precision"] > 0.4 and best["strong_recall"] > 0.3
    assert not [r for r in finetune_only(narrow[site, "control"]) if r["recall"] > 0.5]
