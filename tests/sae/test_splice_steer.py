"""SAE evaluation on a model and steering, checked with planted SAEs whose answer is known."""

import pytest
import torch

from mechscope.corpus import Corpus
from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel
from mechscope.models.tiny import tiny_model, tiny_tokenizer
from mechscope.sae import SAE, SAEConfig
from mechscope.sae.splice import evaluate_sae
from mechscope.sae.steer import direction, generate, steer, steering_hook

WORDS = [f"w{i}" for i in range(99)]
SITE = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def model():
    return HookedModel(tiny_model("llama"), tokenizer=tiny_tokenizer())


@pytest.fixture(scope="module")
def corpus():
    g = torch.Generator().manual_seed(0)
    docs = [
        " ".join(f"w{int(i)}" for i in torch.randint(2, 99, (40,), generator=g)) for _ in range(12)
    ]
    return Corpus.from_texts(docs)


def identity_sae(d: int, site: str = SITE, scale: float | None = None) -> SAE:
    """latents = ReLU([x, -x]): decode gives back x exactly (a planted perfect SAE)."""
    sae = SAE(SAEConfig(arch="relu", d_in=d, d_sae=2 * d, hook_name=site, normalize_scale=scale))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae.eval()


def run(model, sae, corpus, **kw):
    return evaluate_sae(
        model,
        sae,
        corpus,
        n_tokens=160,
        seq_len=16,
        batch_size=4,
        split="all",
        progress=False,
        **kw,
    )


def reference_ce(model, corpus, hooks=()):
    from mechscope.corpus import batches

    losses = []
    for tokens in batches(
        corpus, model.tokenizer, batch_size=4, seq_len=16, n_tokens=160, split="all"
    ):
        with torch.no_grad():
            logits = model.run_with_hooks(tokens, fwd_hooks=list(hooks))
        losses.append(
            torch.nn.functional.cross_entropy(
                logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten(), reduction="none"
            )
        )
    return float(torch.cat(losses).mean())


def test_a_perfect_sae_recovers_everything(model, corpus):
    d = model.dims.d_model
    ev = run(model, identity_sae(d, scale=3.0), corpus)
    assert ev.n_tokens == 150  # 10 windows of 16; scores leave each window's first position out
    assert run(model, identity_sae(d, scale=3.0), corpus, include_first=True).n_tokens == 160
    assert ev.ce_loss_spliced == pytest.approx(ev.ce_loss_clean, abs=1e-5)
    assert ev.ce_loss_recovered == pytest.approx(1.0, abs=1e-4)
    assert ev.kl == pytest.approx(0.0, abs=1e-6) and ev.fvu < 1e-10 and ev.mse < 1e-10
    assert ev.cos == pytest.approx(1.0, abs=1e-6)
    assert ev.l0 == pytest.approx(d)  # each coordinate is active in exactly one half
    assert ev.dead_fraction == 0.0 and ev.dense_fraction == 1.0


def test_clean_and_zero_losses_match_a_direct_computation(model, corpus):
    ev = run(model, identity_sae(model.dims.d_model), corpus)
    assert ev.ce_loss_clean == pytest.approx(reference_ce(model, corpus), abs=1e-5)
    zero = [(SITE, lambda x, hook: torch.zeros_like(x))]
    assert ev.ce_loss_zero == pytest.approx(reference_ce(model, corpus, zero), abs=1e-5)


def test_an_sae_that_outputs_nothing_recovers_nothing(model, corpus):
    sae = identity_sae(model.dims.d_model)
    with torch.no_grad():
        sae.W_dec.zero_()
    ev = run(model, sae, corpus)
    assert ev.ce_loss_spliced == pytest.approx(ev.ce_loss_zero, abs=1e-5)
    assert ev.ce_loss_recovered == pytest.approx(0.0, abs=1e-4)
    assert ev.fvu > 1.0  # predicting zero is worse than predicting the mean


@pytest.mark.parametrize("include_first", [False, True])
def test_fvu_matches_its_definition(model, corpus, include_first: bool):
    """FVU and MSE over positions 1: of each window by default, over all with include_first."""
    d = model.dims.d_model
    sae = identity_sae(d)
    with torch.no_grad():
        sae.W_dec[:d] *= 0.5  # positive parts come back at half size
    ev = run(model, sae, corpus, include_first=include_first)
    from mechscope.corpus import batches

    xs = []
    for tokens in batches(
        corpus, model.tokenizer, batch_size=4, seq_len=16, n_tokens=160, split="all"
    ):
        _, cache = model.run_with_cache(tokens, names=[SITE])
        xs.append(cache[SITE][:, 0 if include_first else 1 :].reshape(-1, d))
    x = torch.cat(xs)
    err = x.clamp(min=0) * 0.5
    fvu = float(err.pow(2).sum() / (x - x.mean(0)).pow(2).sum())
    assert ev.fvu == pytest.approx(fvu, rel=1e-4)
    assert ev.mse == pytest.approx(float(err.pow(2).mean()), rel=1e-4)


def test_transcoder_splices_its_output_site(model, corpus):
    d = model.dims.d_model
    cfg = SAEConfig(
        arch="relu",
        d_in=d,
        d_sae=8,
        hook_name="blocks.0.hook_resid_mid",
        out_hook_name="blocks.0.hook_mlp_out",
    )
    tc = SAE(cfg).eval()
    with torch.no_grad():
        tc.W_dec.zero_()
    ev = run(model, tc, corpus)
    assert ev.hook_name == "blocks.0.hook_mlp_out"
    zero = [("blocks.0.hook_mlp_out", lambda x, hook: torch.zeros_like(x))]
    assert ev.ce_loss_spliced == pytest.approx(reference_ce(model, corpus, zero), abs=1e-5)


def test_evaluation_errors(model, corpus):
    d = model.dims.d_model
    with pytest.raises(MechscopeError, match="wrong SAE dimensions"):
        run(model, identity_sae(d + 1), corpus)
    with pytest.raises(MechscopeError, match="not a hook point"):
        run(model, identity_sae(d, site="blocks.99.hook_resid_post"), corpus)


def test_steering_edits(model):
    d = model.dims.d_model
    sae = identity_sae(d, scale=2.0)
    assert torch.allclose(direction(sae, 3), torch.eye(d)[3] / 2.0)
    x = torch.randn(2, 5, d)
    added = steering_hook(sae, 3, 4.0, "add")(x, None)
    assert torch.allclose(added - x, (torch.eye(d)[3] * 2.0).expand_as(x))
    x[..., 3] = x[..., 3].abs() + 0.1  # latent 3 is active everywhere
    clamped = steering_hook(sae, 3, 7.0, "clamp")(x, None)
    assert torch.allclose(sae.encode(clamped)[..., 3], torch.full((2, 5), 7.0), atol=1e-5)
    assert torch.allclose(clamped[..., :3], x[..., :3]) and torch.allclose(
        clamped[..., 4:], x[..., 4:]
    )
    scaled = steering_hook(sae, 3, 0.0, "scale")(x, None)
    assert torch.allclose(scaled[..., 3], torch.zeros(2, 5), atol=1e-6)
    with pytest.raises(MechscopeError, match="unknown steering mode"):
        steering_hook(sae, 3, 1.0, "push")
    with pytest.raises(MechscopeError, match="out of range"):
        steering_hook(sae, 2 * d, 1.0)


def test_greedy_generation_matches_hugging_face(model):
    tokens = model.to_tokens("w5 w9 w17")
    with torch.no_grad():
        ref = model.hf.generate(tokens, max_new_tokens=6, do_sample=False, pad_token_id=1)
    ours = generate(model, "w5 w9 w17", max_new_tokens=6)
    assert ours == model.tokenizer.decode(ref[0, tokens.shape[1] :].tolist())


def test_steering_changes_generation_and_zero_steering_does_not(model):
    sae = identity_sae(model.dims.d_model)
    same = steer(model, sae, "w5 w9 w17", latent=2, scale=0.0, max_new_tokens=5)
    assert same.steered == same.baseline
    pushed = steer(model, sae, "w5 w9 w17", latent=2, scale=200.0, max_new_tokens=5)
    assert pushed.steered != pushed.baseline
    assert pushed.to_dict()["hook_name"] == SITE


def test_steering_checks_the_sae_against_the_model(model):
    d = model.dims.d_model
    with pytest.raises(MechscopeError, match="wrong SAE dimensions"):
        steer(model, identity_sae(d + 1), "w5 w9", latent=0, scale=1.0, max_new_tokens=1)
    with pytest.raises(MechscopeError, match="not a hook point"):
        steer(model, identity_sae(d, site="blocks.9.hook_resid_post"), "w5", latent=0, scale=1.0)
