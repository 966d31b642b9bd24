"""The generic fallback on BLOOM, a decoder-only type with no family file.

It must find the layer list, embedding, final norm and unembedding by itself, keep the logits
bit-identical, expose exactly the residual-stream sites, refuse the others with a reason, and be
enough for the logit lens, probes and activation harvesting.
"""

from __future__ import annotations

import json
import random

import pytest
import torch
from transformers import BertConfig

from mechscope import HookedModel, MechscopeError
from mechscope.activations import harvest
from mechscope.corpus import Corpus, windows
from mechscope.families import family_for
from mechscope.lenses import logit_lens
from mechscope.models.tiny import FALLBACK_CONFIGS, tiny_model, tiny_tokenizer
from mechscope.probes import from_rows, probe
from mechscope.sae import SAE, SAEConfig
from mechscope.sae.splice import evaluate_sae
from mechscope.sae.train import TrainConfig, fit

WORDS = [f"word{i}" for i in range(40)]
X = torch.randint(2, 101, (2, 9), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def bloom() -> HookedModel:
    return HookedModel(tiny_model("bloom"), tiny_tokenizer(WORDS))


def test_the_fallback_finds_the_modules_and_keeps_the_logits(bloom: HookedModel) -> None:
    f = bloom.family
    assert f.residual_only and f.name == "fallback:bloom"
    assert (f.embed, f.layers, f.final_norm, f.unembed) == (
        "transformer.word_embeddings",
        "transformer.h",
        "transformer.ln_f",
        "lm_head",
    )
    hf = tiny_model("bloom")
    with torch.no_grad():
        assert torch.equal(HookedModel(hf)(X), hf(X).logits)
    n = bloom.dims.n_layers
    want = ["hook_embed"] + [
        f"blocks.{i}.hook_resid_{s}" for i in range(n) for s in ("pre", "post")
    ]
    assert list(bloom.sites) == want


def test_residual_stream_chain_and_run_from(bloom: HookedModel) -> None:
    with torch.no_grad(), bloom.capture_inputs() as inputs:
        logits, cache = bloom.run_with_cache(X)
    with torch.no_grad():
        for layer in range(bloom.dims.n_layers):
            if layer:
                assert torch.equal(
                    cache[f"blocks.{layer - 1}.hook_resid_post"],
                    cache[f"blocks.{layer}.hook_resid_pre"],
                )
            resid = cache[f"blocks.{layer}.hook_resid_pre"]
            torch.testing.assert_close(bloom.run_from(resid, layer, inputs), logits)
        last = cache[f"blocks.{bloom.dims.n_layers - 1}.hook_resid_post"]
        assert torch.equal(bloom.run_from(last, bloom.dims.n_layers, inputs), logits)


def test_writes_at_equivalent_residual_sites_agree(bloom: HookedModel) -> None:
    v = torch.randn(bloom.dims.d_model, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a = bloom.run_with_hooks(X, fwd_hooks=[("blocks.0.hook_resid_post", lambda t, h: t + v)])
        b = bloom.run_with_hooks(X, fwd_hooks=[("blocks.1.hook_resid_pre", lambda t, h: t + v)])
        assert torch.equal(a, b) and (a - bloom(X)).abs().max() > 1e-3


@pytest.mark.parametrize(
    "name", ["blocks.0.attn.hook_z", "blocks.1.hook_mlp_out", "ln_final.hook_scale"]
)
def test_missing_sites_name_the_model_type_and_the_reason(bloom: HookedModel, name: str) -> None:
    with pytest.raises(MechscopeError) as err:
        bloom.run_with_cache(X, names=name)
    msg = str(err.value)
    assert name in msg and "fallback:bloom" in msg and "no family file" in msg
    with pytest.raises(MechscopeError, match="no family file"):
        bloom.run_with_cache(X, names="blocks.*.hook_attn_out")


def test_a_type_that_is_not_a_decoder_is_still_refused() -> None:
    with pytest.raises(MechscopeError, match="unsupported architecture model_type='bert'"):
        family_for(BertConfig())


def test_logit_lens_on_the_fallback(bloom: HookedModel) -> None:
    result = logit_lens(bloom, X[:1], target=5)
    # the last layer's reading is the model's own output distribution
    assert abs(result.kl[-1]).max() < 1e-5
    with torch.no_grad():
        top = bloom(X[:1])[0].softmax(-1).topk(5)
    assert torch.equal(torch.as_tensor(result.top_ids[-1]), top.indices)


def test_probe_reads_a_token_label_on_the_fallback(bloom: HookedModel) -> None:
    rng = random.Random(0)
    positive = set(rng.sample(WORDS, 20))
    texts = {" ".join(rng.choices(WORDS, k=rng.randint(3, 8))) for _ in range(400)}
    rows = [{"text": t, "label": int(t.split()[-1] in positive)} for t in sorted(texts)]
    result = probe(bloom, from_rows(rows), ["hook_embed", "blocks.*.hook_resid_post"], quiet=True)
    by_site = {s.site: s for s in result.scores}
    # the label is a function of the last token, which the embedding carries linearly
    assert by_site["hook_embed"].accuracy >= 0.9


def test_harvest_on_the_fallback(bloom: HookedModel, tmp_path) -> None:
    rng = random.Random(1)
    corpus = Corpus.from_texts(
        [" ".join(rng.choices(WORDS, k=rng.randint(20, 80))) for _ in range(60)], name="toy"
    )
    site = "blocks.1.hook_resid_post"
    store = harvest(
        bloom, site, corpus, 256, tmp_path, seq_len=32, include_first=True, progress=False
    )
    ws = list(windows(corpus, bloom.tokenizer, seq_len=32, split="train"))[:8]
    with torch.no_grad():
        _, cache = bloom.run_with_cache(torch.stack(ws), names=site)
    assert torch.equal(store.tensor(), cache[site].reshape(-1, bloom.dims.d_model)[:256])
    # an SAE trains on the stored residuals; a planted perfect one (latents ReLU([x, -x]))
    # spliced into the fallback model at that site changes nothing
    d = bloom.dims.d_model
    sae = SAE(SAEConfig(arch="relu", d_in=d, d_sae=2 * d, k=4, hook_name=site))
    trained = fit(sae, (store.tensor()[i : i + 64] for i in range(0, 256, 64)),
                  TrainConfig(steps=4, log_every=1), progress=False)  # fmt: skip
    assert len(trained.history) == 4
    with torch.no_grad():
        eye = torch.eye(d)
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    ev = evaluate_sae(bloom, sae, corpus, n_tokens=64, seq_len=16, batch_size=4, progress=False)
    assert ev.ce_loss_spliced == pytest.approx(ev.ce_loss_clean, abs=1e-5) and ev.fvu < 1e-10


@pytest.mark.parametrize("kind", list(FALLBACK_CONFIGS))
def test_every_fallback_type_reads_its_residual_stream(kind: str) -> None:
    hf = tiny_model(kind)
    with torch.no_grad():
        bare = hf(X).logits
        model = HookedModel(hf)
        assert model.family.residual_only
        with model.capture_inputs() as inputs:
            logits, cache = model.run_with_cache(X)
        assert torch.equal(logits, bare)
        last = cache[f"blocks.{model.dims.n_layers - 1}.hook_resid_post"]
        assert torch.equal(model.run_from(last, model.dims.n_layers, inputs), bare)
        torch.testing.assert_close(
            model.run_from(cache["blocks.0.hook_resid_pre"], 0, inputs), bare
        )


@pytest.mark.parametrize("kind", ["gemma2", "phi3", "bloom"])
def test_a_saved_folder_of_a_new_family_loads(kind: str, tmp_path) -> None:
    import mechscope

    hf = tiny_model(kind)
    hf.save_pretrained(tmp_path)
    tiny_tokenizer(WORDS).save_pretrained(tmp_path)
    model = mechscope.load(str(tmp_path), progress=False)
    assert model.hf.config.model_type in model.family.model_types
    with torch.no_grad():
        assert torch.equal(model(X), hf(X).logits)


@pytest.mark.parametrize(("kind", "missing"), [("bloom", "Attention"), ("gemma2", "Circuit")])
def test_the_report_marks_what_the_family_lacks(kind: str, missing: str, tmp_path) -> None:
    from mechscope.report import DEFAULT_PROMPTS, build_report

    words = sorted({w for p in DEFAULT_PROMPTS for w in p.replace(",", " , ").split()})
    model = HookedModel(tiny_model(kind), tiny_tokenizer(words))
    html = build_report(model, tmp_path, quiet=True).read_text("utf-8")
    assert "Skipped: not available for this model" in html
    data = json.loads((tmp_path / "report.json").read_text())
    assert missing in data["not_available"] and "Logit lens" not in data["not_available"]


def test_batched_restarts_and_patching_on_an_alibi_fallback(bloom: HookedModel) -> None:
    """BLOOM passes its ALiBi bias as [batch * head 1 key_pos]: tiled variants must follow it."""
    from mechscope.patching import patch

    clean = X.clone()
    corrupt = X.clone()
    corrupt[:, 2] = (X[:, 2] + 7) % 101

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, -1, 3] - logits[:, -1, 4]

    with torch.no_grad(), bloom.capture_inputs() as inputs:
        logits, cache = bloom.run_with_cache(X, names="blocks.1.hook_resid_pre")
    with torch.no_grad():
        tiled = bloom.run_from(cache["blocks.1.hook_resid_pre"].repeat(3, 1, 1), 1, inputs)
        torch.testing.assert_close(tiled[4:6], logits)
        got = patch(bloom, clean, corrupt, metric, "resid_pre", chunk=3).values
        _, src = bloom.run_with_cache(clean, names="blocks.*.hook_resid_pre")
        for layer, p in ((0, 2), (2, 5)):
            name = f"blocks.{layer}.hook_resid_pre"

            def put(t, hook, name=name, p=p):
                t = t.clone()
                t[:, p] = src[name][:, p]
                return t

            want = metric(bloom.run_with_hooks(corrupt, fwd_hooks=[(name, put)])).mean()
            assert abs(float(got[layer, p]) - float(want)) < 1e-5
