"""The trainer: schedule, unit-norm decoders, dead-latent bookkeeping, exact resume, errors."""

from __future__ import annotations

import itertools
import json
import os

import pytest
import synthetic as syn
import torch

from mechscope.errors import FolderInUseError, MechscopeError
from mechscope.files import folder_lock
from mechscope.sae import SAE, SAEConfig, TrainConfig, fit
from mechscope.sae.checkpoint import clear_checkpoints
from mechscope.sae.train import dead_window, lr_at


def small(arch: str, **kw) -> SAE:
    cfg = SAEConfig(arch=arch, d_in=16, d_sae=48, k=3, normalize_scale=0.5, **kw)
    return SAE(cfg, seed=1)


def data(n: int, seed: int = 2):
    return syn.batches(syn.dictionary(32, 16, seed=5), n, 64, seed=seed)


def test_learning_rate_schedule():
    cfg = TrainConfig(steps=100, lr=1.0, warmup_steps=10, decay="linear", decay_fraction=0.2)
    assert lr_at(cfg, 0) == pytest.approx(0.1) and lr_at(cfg, 9) == pytest.approx(1.0)
    assert lr_at(cfg, 50) == 1.0 and lr_at(cfg, 79) == 1.0
    assert lr_at(cfg, 80) == pytest.approx(1.0) and lr_at(cfg, 90) == pytest.approx(0.5)
    assert lr_at(cfg, 99) == pytest.approx(0.05)
    cos = TrainConfig(steps=110, lr=1.0, warmup_steps=10, decay="cosine")
    assert lr_at(cos, 10) == pytest.approx(1.0) and lr_at(cos, 60) == pytest.approx(0.5)
    assert TrainConfig(tokens=1000, batch_size=64).total_steps == 15


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({}, "exactly one of steps or tokens"),
        ({"steps": 5, "tokens": 5}, "exactly one of steps or tokens"),
        ({"tokens": 10, "batch_size": 64}, "at least one step"),
        ({"steps": 5, "decay": "step"}, "unknown learning-rate decay"),
        ({"steps": 5, "lr": -1.0}, "learning rate"),
        ({"steps": 5, "l0_gain": 0.0}, "l0_gain must be > 0"),
        ({"steps": 5, "topk_warmup": 1.5}, "fractions in"),
    ],
)
def test_train_config_errors(kw, match):
    with pytest.raises(MechscopeError, match=match):
        TrainConfig(**kw)


@pytest.mark.parametrize("arch", ["relu", "topk", "batchtopk", "jumprelu", "matryoshka"])
def test_fit_runs_and_keeps_invariants(arch):
    sae = small(arch)
    res = fit(
        sae,
        data(30),
        TrainConfig(steps=30, lr=3e-3, log_every=10, dead_window_tokens=640),
        progress=False,
    )
    assert res.steps == 30 and res.tokens == 30 * 64 and not sae.training
    assert [h["step"] for h in res.history] == [10.0, 20.0, 30.0]
    assert res.history[-1]["fvu"] < res.history[0]["fvu"] * 1.5 and 0 <= res.dead_fraction <= 1
    if sae.unit_norm_decoder:
        torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(48))
    if arch == "topk":
        assert res.l0 <= 3
    if arch == "batchtopk":
        assert float(sae.threshold) > 0  # learned for inference


def test_batches_run_out_early():
    res = fit(small("topk"), data(4), TrainConfig(steps=10), progress=False)
    assert res.steps == 4


def test_dead_latents_get_auxk():
    """Latents that never fire are marked dead after the window and the AuxK term appears."""
    sae = small("topk")
    with torch.no_grad():
        sae.b_enc[:24] = -100.0  # half the latents can never win the top-k
    res = fit(
        sae,
        data(12),
        TrainConfig(steps=12, lr=1e-3, log_every=1, dead_window_tokens=256),
        progress=False,
    )
    early, late = res.history[2], res.history[-1]
    assert "auxk_loss" not in early and early["dead_fraction"] == 0.0
    assert late["dead_fraction"] >= 0.5 and late["auxk_loss"] > 0


def test_jumprelu_dead_latents_get_auxk():
    """A JumpReLU latent above every threshold has no gradient but AuxK's, after 50 batches."""

    def blocked() -> SAE:
        sae = small("jumprelu")
        with torch.no_grad():
            sae.log_threshold[:24] = 5.0  # threshold e^5: these latents never fire
        return sae

    cfg = TrainConfig(steps=240, lr=1e-3, batch_size=64, log_every=1)
    sae = blocked()
    assert dead_window(cfg, sae) == 50 * 64 < cfg.dead_window  # the architecture's shorter window
    assert dead_window(cfg, small("topk")) == cfg.dead_window
    assert dead_window(TrainConfig(steps=240, dead_window_tokens=99), sae) == 99
    w_enc = sae.W_enc.detach().clone()
    res = fit(sae, data(240), cfg, progress=False)
    assert "auxk_loss" not in res.history[48] and res.history[50]["auxk_loss"] > 0
    moved = (sae.W_enc.detach() - w_enc).abs().sum(0)
    assert bool((moved[:24] > 0).all())  # only AuxK reaches the dead latents' encoder columns
    off = blocked()
    fit(
        off,
        data(240),
        TrainConfig(steps=240, lr=1e-3, batch_size=64, aux_coefficient=0.0),
        progress=False,
    )
    assert bool((off.W_enc.detach()[:, :24] == w_enc[:, :24]).all())  # without AuxK: frozen


def test_pairs_and_tensors_are_checked():
    with pytest.raises(MechscopeError, match="transcoder"):
        fit(
            small("relu"),
            iter([(torch.randn(4, 16), torch.randn(4, 16))]),
            TrainConfig(steps=1),
            progress=False,
        )
    tc = small("relu", out_hook_name="blocks.0.hook_mlp_out")
    with pytest.raises(MechscopeError, match="pairs"):
        fit(tc, iter([torch.randn(4, 16)]), TrainConfig(steps=1), progress=False)


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "jumprelu", "relu", "matryoshka"])
def test_resume_is_exact(tmp_path, arch):
    """2N steps straight == N steps, a crash, and a resume (same iterator from its start)."""
    cfg = TrainConfig(
        steps=16, lr=3e-3, warmup_steps=3, checkpoint_every=8, log_every=4, dead_window_tokens=320
    )
    straight = small(arch)
    fit(straight, data(16), cfg, progress=False)

    first = small(arch)
    crashed = itertools.islice(data(16), 8)  # the run "crashes" after step 8, its data cut short
    fit(first, crashed, cfg, checkpoint_dir=tmp_path, progress=False)
    assert json.loads((tmp_path / "latest.json").read_text()) == {"checkpoint": "step-8"}
    resumed = SAE(first.cfg, seed=9)  # fresh weights: everything comes from the checkpoint
    res = fit(resumed, data(16), cfg, checkpoint_dir=tmp_path, progress=False)
    assert res.steps == 16 and [h["step"] for h in res.history] == [4.0, 8.0, 12.0, 16.0]
    for (name, a), b in zip(
        straight.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.json", "step-16"]


def test_resume_checks(tmp_path):
    cfg = TrainConfig(steps=4, checkpoint_every=2)
    fit(small("topk"), data(4), cfg, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(MechscopeError, match=r"other settings \(arch 'topk' -> 'relu'"):
        fit(small("relu"), data(4), cfg, checkpoint_dir=tmp_path, progress=False)
    for other in ({"lr": 1e-3}, {"seed": 1}, {"steps": 8}, {"batch_size": 32}):  # training settings
        changed = TrainConfig(**{**cfg.__dict__, **other})
        name = next(iter(other))
        with pytest.raises(MechscopeError, match=rf"other settings \({name} "):
            fit(small("topk"), data(8), changed, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(MechscopeError, match=r"other settings \(d_sae 48 -> 40"):
        fit(SAE(SAEConfig("topk", 16, 40, k=3, normalize_scale=0.5)), data(4), cfg,
            checkpoint_dir=tmp_path, progress=False)  # fmt: skip
    # the checkpoint interval and provenance do not change the result: the run resumes
    more = TrainConfig(**{**cfg.__dict__, "checkpoint_every": 1})
    res = fit(small("topk", model_name="m"), data(4), more, checkpoint_dir=tmp_path, progress=False)
    assert res.steps == 4
    with pytest.raises(MechscopeError, match="iterator ended after 2 batches"):
        fit(small("topk"), data(2), cfg, checkpoint_dir=tmp_path, progress=False)


def test_damaged_checkpoints_are_one_line_errors(tmp_path):
    cfg = TrainConfig(steps=4, checkpoint_every=2)
    fit(small("topk"), data(4), cfg, checkpoint_dir=tmp_path, progress=False)
    latest = tmp_path / "latest.json"
    for text, message in [
        ("{not json", "latest.json is damaged"),
        ('{"checkpoint": "../../etc"}', "latest.json is damaged"),
        ('{"checkpoint": "step-99"}', "points at step-99, which is missing"),
    ]:
        latest.write_text(text)
        with pytest.raises(MechscopeError, match=message) as info:
            fit(small("topk"), data(4), cfg, checkpoint_dir=tmp_path, progress=False)
        assert "\n" not in str(info.value) and "delete" in str(info.value)
    latest.write_text('{"checkpoint": "step-4"}')
    (tmp_path / "step-4" / "optimizer.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(MechscopeError, match="checkpoint .*step-4 is damaged"):
        fit(small("topk"), data(4), cfg, checkpoint_dir=tmp_path, progress=False)


def test_only_what_training_wrote_is_removed(tmp_path):
    (tmp_path / "step-notes.txt").write_text("mine")  # looks like a checkpoint name, is not one
    (tmp_path / "step-7").mkdir()  # ...but a folder named like a checkpoint is one
    fit(small("topk"), data(4), TrainConfig(steps=4, checkpoint_every=2), checkpoint_dir=tmp_path,
        progress=False)  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.json", "step-4", "step-notes.txt"]
    clear_checkpoints(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-notes.txt"]
    (tmp_path / "step-notes.txt").unlink()
    clear_checkpoints(tmp_path)
    assert not tmp_path.exists()


def test_inf_and_nan_batches_are_refused():
    x = torch.randn(64, 16)
    x[3, 2] = float("inf")
    with pytest.raises(MechscopeError, match="holds 1 inf/NaN values"):
        fit(small("topk"), iter([x]), TrainConfig(steps=1), progress=False)
    tc = small("relu", out_hook_name="blocks.0.hook_mlp_out")
    y = torch.randn(64, 16)
    y[0, 0] = float("nan")
    with pytest.raises(MechscopeError, match="inf/NaN"):
        fit(tc, iter([(torch.randn(64, 16), y)]), TrainConfig(steps=1), progress=False)


def test_one_training_run_per_checkpoint_folder(tmp_path):
    with (
        folder_lock(tmp_path, "another training"),
        pytest.raises(FolderInUseError, match=rf"in use by another training \(pid {os.getpid()}"),
    ):
        fit(small("topk"), data(4), TrainConfig(steps=4), checkpoint_dir=tmp_path,
            progress=False)  # fmt: skip


def test_resample_dead_latents():
    """Dead latents point at badly reconstructed tokens afterwards; Adam's moments for them are zero."""
    from mechscope.sae.resample import resample_dead

    sae = small("jumprelu")
    opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
    x = next(data(1))
    out = sae(x)
    sae.loss(x, out)["loss"].backward()
    opt.step()
    dead = torch.zeros(48, dtype=torch.bool)
    dead[[3, 7, 40]] = True
    before = sae.W_dec.detach().clone()
    assert resample_dead(sae, opt, x, None, out, dead, seed=0) == 3
    resid = sae.scale_in(x) - sae.scale_in(out.x_hat.detach())
    resid = resid / resid.norm(dim=-1, keepdim=True)
    for i in (3, 7, 40):
        assert torch.isclose(
            (resid @ sae.W_dec[i]).max(), torch.tensor(1.0), atol=1e-5
        )  # one token's residual
        assert torch.allclose(sae.threshold[i], torch.tensor(sae.cfg.threshold))
        assert opt.state[sae.W_dec]["exp_avg"][i].abs().max() == 0
        assert opt.state[sae.W_enc]["exp_avg_sq"][:, i].abs().max() == 0
    assert torch.equal(sae.W_dec[~dead], before[~dead])


def with_dead_latents(arch: str) -> SAE:
    sae = small(arch)
    with torch.no_grad():
        sae.b_enc[:8] = -50.0  # these latents cannot fire until resampled
    return sae


@pytest.mark.parametrize("arch", ["relu", "jumprelu"])
def test_resume_is_exact_with_resampling(tmp_path, arch):
    cfg = TrainConfig(
        steps=12,
        lr=3e-3,
        checkpoint_every=6,
        dead_window_tokens=128,
        resample_every=3,
        resample_until=1.0,
        log_every=1,
    )
    straight = with_dead_latents(arch)
    fit(straight, data(12), cfg, progress=False)
    first = with_dead_latents(arch)
    fit(first, itertools.islice(data(12), 6), cfg, checkpoint_dir=tmp_path, progress=False)
    resumed = small(arch)
    res = fit(resumed, data(12), cfg, checkpoint_dir=tmp_path, progress=False)
    assert sum(h.get("resampled", 0) for h in res.history) >= 8  # resampling did happen
    for (name, a), b in zip(
        straight.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_and_resume_on_cuda(tmp_path):
    """The trainer's state follows the SAE to the GPU; the result matches the CPU run."""
    cfg = TrainConfig(steps=8, lr=3e-3, checkpoint_every=4, log_every=4, dead_window_tokens=320)
    on_cpu = small("topk")
    fit(on_cpu, data(8), cfg, progress=False)
    on_gpu = small("topk").cuda()
    crashed = (x.cuda() for x in itertools.islice(data(8), 4))
    fit(on_gpu, crashed, cfg, checkpoint_dir=tmp_path, progress=False)
    fit(on_gpu, (x.cuda() for x in data(8)), cfg, checkpoint_dir=tmp_path, progress=False)
    for (name, a), b in zip(on_cpu.state_dict().items(), on_gpu.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b.cpu(), rtol=1e-4, atol=1e-5, msg=name)
