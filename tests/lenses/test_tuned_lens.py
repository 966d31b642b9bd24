"""The tuned lens on a tiny model: identity at init, training lowers held-out KL, save/load, resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mechscope.lenses.tuned_train as tuned_train
from mechscope import HookedModel, MechscopeError
from mechscope.corpus import Corpus
from mechscope.lenses import (
    LENSES,
    TrainConfig,
    TunedLens,
    held_out_kl,
    lens_logits,
    logit_lens,
    model_fingerprint,
    train_tuned_lens,
    tuned_lens,
)
from mechscope.models.tiny import tiny_model

CFG = TrainConfig(tokens=4096, seq_len=32, batch_size=8, lr=0.05, sample=0, checkpoint_every=2)


@pytest.fixture(scope="module")
def trained(tiny_lm: HookedModel, tiny_corpus: Corpus) -> TunedLens:
    return train_tuned_lens(tiny_lm, tiny_corpus, CFG, quiet=True)


def prompt(n: int = 12) -> torch.Tensor:
    return torch.randint(2, 92, (n,), generator=torch.Generator().manual_seed(1))


def test_untrained_tuned_lens_is_the_logit_lens(tiny_lm: HookedModel) -> None:
    identity = TunedLens.identity(tiny_lm)
    ours = tuned_lens(tiny_lm, prompt(), lens=identity, target=5, top_k=4)
    plain = logit_lens(tiny_lm, prompt(), target=5, top_k=4)
    for name in ("top_ids", "top_probs", "target_rank", "target_prob", "kl"):
        np.testing.assert_array_equal(getattr(ours, name), getattr(plain, name))
    assert ours.lens == "tuned" and plain.lens == "logit"
    assert LENSES["tuned"] is tuned_lens and LENSES["logit"] is logit_lens


def test_logit_lens_kl_is_kl_to_the_output(tiny_lm: HookedModel) -> None:
    t = prompt()
    with torch.inference_mode():
        final = tiny_lm(t)[0].log_softmax(-1)  # [pos d_vocab]
    lens = lens_logits(tiny_lm, t).log_softmax(-1)  # [layer pos d_vocab]
    expected = torch.nn.functional.kl_div(lens, final, log_target=True, reduction="none").sum(-1)
    result = logit_lens(tiny_lm, t)
    np.testing.assert_allclose(result.kl, expected.numpy(), atol=1e-5)
    assert np.abs(result.kl[-1]).max() < 1e-5  # the last resid_post is the output
    np.testing.assert_allclose(result.mean_kl(), result.kl.mean(1))


def test_training_lowers_held_out_kl_at_every_layer(
    tiny_lm: HookedModel, tiny_corpus: Corpus, trained: TunedLens
) -> None:
    kl = held_out_kl(tiny_lm, tiny_corpus, lens=trained, tokens=512, seq_len=32)
    assert kl.tokens >= 256
    assert (kl.tuned[:-1] < kl.logit[:-1]).all(), (kl.logit, kl.tuned)
    assert kl.tuned[-1] == kl.logit[-1] and kl.logit[-1] < 1e-5  # last layer: the output itself
    untrained = held_out_kl(tiny_lm, tiny_corpus, lens=TunedLens.identity(tiny_lm), tokens=512,
                            seq_len=32)  # fmt: skip
    np.testing.assert_array_equal(untrained.tuned, untrained.logit)
    np.testing.assert_allclose(untrained.logit, kl.logit)


def test_held_out_kl_is_the_mean_kl_of_each_position(
    tiny_lm: HookedModel, tiny_corpus: Corpus, trained: TunedLens
) -> None:
    """Against torch's kl_div on the same windows, every layer read through the model's own
    final norm and unembedding (logit lens) or the lens's translator first (tuned lens)."""
    from mechscope.corpus import batches

    kl = held_out_kl(tiny_lm, tiny_corpus, lens=trained, tokens=256, seq_len=32)
    sums, n = np.zeros((2, tiny_lm.dims.n_layers)), 0
    with torch.inference_mode():
        for batch in batches(tiny_corpus, tiny_lm.tokenizer, batch_size=4, seq_len=32,
                             n_tokens=256, seed=0, split="test"):  # fmt: skip
            logits, cache = tiny_lm.run_with_cache(batch, names="blocks.*.hook_resid_post")
            final = logits.flatten(0, 1).log_softmax(-1)
            n += final.shape[0]
            for layer in range(tiny_lm.dims.n_layers):
                resid = cache[f"blocks.{layer}.hook_resid_post"].flatten(0, 1)
                for row, h in enumerate((resid, trained.translate(resid[None], [layer])[0])):
                    z = tiny_lm.unembed(tiny_lm.final_norm(h)).log_softmax(-1)
                    per = torch.nn.functional.kl_div(z, final, log_target=True, reduction="none")
                    sums[row, layer] += per.sum(-1).clamp_min(0).sum().item()
    assert kl.tokens == n
    np.testing.assert_allclose(kl.logit, sums[0] / n, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(kl.tuned, sums[1] / n, rtol=1e-4, atol=1e-6)


def test_training_touches_only_the_translators(tiny_lm: HookedModel, trained: TunedLens) -> None:
    fresh = HookedModel(tiny_model("llama"))
    for (name, p), q in zip(tiny_lm.hf.named_parameters(), fresh.hf.parameters(), strict=True):
        assert torch.equal(p, q), name
        assert p.requires_grad, name  # frozen only while training
    assert trained.config["tokens_trained"] == CFG.tokens
    assert trained.config["corpus"] == "tiny-words"
    last = trained.n_layers - 1  # resid_post of the last layer is the output: never trained
    assert not trained.weights[last].any() and not trained.biases[last].any()
    assert trained.weights[0].abs().max() > 0


def test_save_load_round_trip(tmp_path, tiny_lm: HookedModel, trained: TunedLens) -> None:
    path = trained.save(tmp_path / "lens.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lens.safetensors"]  # no temp file
    loaded = TunedLens.load(path, tiny_lm)
    assert loaded.config == trained.config
    torch.testing.assert_close(loaded.weight, trained.weight, rtol=0, atol=0)
    a = tuned_lens(tiny_lm, prompt(), lens=loaded, target=3)
    b = tuned_lens(tiny_lm, prompt(), lens=trained, target=3)
    np.testing.assert_array_equal(a.kl, b.kl)


def test_load_errors(tmp_path, tiny_lm: HookedModel, trained: TunedLens) -> None:
    with pytest.raises(MechscopeError, match="no tuned lens"):
        TunedLens.load(tmp_path / "missing.safetensors", tiny_lm)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    with pytest.raises(MechscopeError, match="not a safetensors"):
        TunedLens.load(junk, tiny_lm)
    small = TunedLens(2, 48, {**trained.config, "n_layers": 2}).save(tmp_path / "small.safetensors")
    with pytest.raises(MechscopeError, match="2 layers x d_model 48"):
        TunedLens.load(small, tiny_lm)
    other = HookedModel(tiny_model("llama", seed=1))  # same shapes, other weights
    assert model_fingerprint(other) != model_fingerprint(tiny_lm)
    path = trained.save(tmp_path / "lens.safetensors")
    with pytest.raises(MechscopeError, match="other weights"):
        TunedLens.load(path, other)
    assert TunedLens.load(path, other, check_weights=False).n_layers == 3


def test_resume_after_a_crash_gives_the_same_lens(
    tmp_path, monkeypatch, tiny_lm: HookedModel, tiny_corpus: Corpus, trained: TunedLens
) -> None:
    out = tmp_path / "lens.safetensors"
    real_step, calls = tuned_train.lens_step, []

    def crashing(*args, **kwargs):
        if len(calls) == 5:
            raise KeyboardInterrupt
        calls.append(1)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(tuned_train, "lens_step", crashing)
    with pytest.raises(KeyboardInterrupt):
        train_tuned_lens(tiny_lm, tiny_corpus, CFG, out=out, quiet=True)
    assert not out.exists() and (tmp_path / "lens.safetensors.partial").exists()
    calls.clear()
    monkeypatch.setattr(
        tuned_train, "lens_step", lambda *a, **k: (calls.append(1), real_step(*a, **k))[1]
    )
    resumed = train_tuned_lens(tiny_lm, tiny_corpus, CFG, out=out, quiet=True)
    assert len(calls) == CFG.steps - 4  # resumed from the checkpoint after step 4
    torch.testing.assert_close(resumed.weight, trained.weight, rtol=0, atol=1e-6)
    torch.testing.assert_close(resumed.bias, trained.bias, rtol=0, atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lens.safetensors"]


def test_one_run_per_output_file(tmp_path, tiny_lm: HookedModel, tiny_corpus: Corpus) -> None:
    """A run into a file another run holds is refused before it trains or touches its .partial."""
    from mechscope.errors import FolderInUseError
    from mechscope.files import file_lock

    out = tmp_path / "lens.safetensors"
    with file_lock(out, "tuned lens training"), pytest.raises(FolderInUseError) as info:
        train_tuned_lens(tiny_lm, tiny_corpus, CFG, out=out, quiet=True)
    assert str(info.value).startswith(f"{out} is in use by tuned lens training (pid ")
    assert list(tmp_path.iterdir()) == []  # no lens, no .partial, the lock released


def test_cached_lens_waits_for_the_run_training_it(
    tmp_path, monkeypatch, capsys, tiny_lm: HookedModel, trained: TunedLens
) -> None:
    """A second user of the cached lens waits for the run holding it and loads that run's copy."""
    import threading
    import time

    import mechscope.lenses.cached as cached
    from mechscope.files import file_lock

    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path))
    monkeypatch.setattr(tuned_train, "lens_step", None)  # it must not train
    monkeypatch.setattr(cached, "WAIT_SECONDS", 0.01)
    path, got, err = cached.tuned_lens_path(tiny_lm, 256), [], ""
    second = threading.Thread(
        target=lambda: got.append(cached.cached_tuned_lens(tiny_lm, tokens=256))
    )
    with file_lock(path, "tuned lens training"):  # the first run, training this lens
        second.start()
        while "waiting for the run that trains this lens" not in err:
            assert second.is_alive(), "it did not wait"
            time.sleep(0.01)
            err += capsys.readouterr().err
        assert "is in use by tuned lens training (pid" in err
        trained.save(path)  # the first run publishes its lens, then releases the lock
    second.join(60)
    assert len(got) == 1
    torch.testing.assert_close(got[0].weight, trained.weight, rtol=0, atol=0)


@pytest.mark.parametrize(
    "kwargs",
    [{"optimizer": "lbfgs"}, {"tokens": 0}, {"seq_len": 1}, {"lr": 0}, {"train_dtype": "int8"}],
)
def test_bad_config_raises(kwargs: dict) -> None:
    with pytest.raises(MechscopeError):
        TrainConfig(**kwargs)


def test_tuned_lens_refuses_another_models_shape(trained: TunedLens) -> None:
    gpt2 = HookedModel(tiny_model("gpt_neox_sequential"))  # 2 layers
    with pytest.raises(MechscopeError, match="translators"):
        tuned_lens(gpt2, prompt(), lens=trained)


def test_cached_tuned_lens_trains_once(
    tmp_path, monkeypatch, tiny_lm: HookedModel, tiny_corpus: Corpus
) -> None:
    import mechscope.lenses.cached as cached

    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path))
    first = cached.cached_tuned_lens(
        tiny_lm, tokens=512, corpus=tiny_corpus, config=CFG, progress=False
    )
    path = cached.tuned_lens_path(tiny_lm, 512, tiny_corpus)
    assert path.parent == tmp_path / "tuned_lens" and path.is_file()
    assert path.name.startswith(model_fingerprint(tiny_lm) + "-512")

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(cached, "train_tuned_lens", no_training)
    again = cached.cached_tuned_lens(
        tiny_lm, tokens=512, corpus=tiny_corpus, config=CFG, progress=False
    )
    torch.testing.assert_close(again.weight, first.weight, rtol=0, atol=0)
    assert again.config["tokens_trained"] == 512
