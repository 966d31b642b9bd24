"""CLT and per-layer training: resumes exactly after a crash; reconstructs its planted data."""

from __future__ import annotations

import pytest
import torch

from mechscope.errors import MechscopeError
from mechscope.graphs.train import CLTConfig, train_transcoders

L, D = 3, 16
STEPS = 200


def planted(n_batches: int, batch: int = 256, seed: int = 0) -> list[tuple[torch.Tensor, ...]]:
    """Inputs built from 24 sparse features per layer; each output layer is a fixed linear
    read of the active features of its own and earlier layers (a CLT's exact form)."""
    g = torch.Generator().manual_seed(seed)
    enc = torch.randn(L, 24, D, generator=g)
    enc = enc / enc.norm(dim=-1, keepdim=True)
    dec = torch.randn(L, L, 24, D, generator=g) * 0.5
    out = []
    for _ in range(n_batches):
        acts = (torch.rand(L, batch, 24, generator=g) < 0.08) * torch.rand(
            L, batch, 24, generator=g
        )
        x = torch.einsum("lbf,lfd->lbd", acts, enc)
        y = torch.stack([sum(acts[i] @ dec[i, m] for i in range(m + 1)) for m in range(L)])
        out.append((*x.unbind(0), *y.unbind(0)))
    return out


class Crash(Exception):
    pass


def crashing(batches: list, at: int):
    for i, b in enumerate(batches):
        if i == at:
            raise Crash
        yield b


@pytest.mark.parametrize("activation", ["jumprelu", "topk"])
def test_resume_after_crash_is_exact(tmp_path, activation) -> None:
    cfg = CLTConfig(
        d_sae=32, activation=activation, k=4, steps=30, batch_size=256, checkpoint_every=10
    )
    data = planted(30)
    scales = (torch.ones(L), torch.ones(L))
    whole, _ = train_transcoders(data, L, D, cfg, scales, tmp_path / "a", quiet=True)
    with pytest.raises(Crash):
        train_transcoders(crashing(data, 25), L, D, cfg, scales, tmp_path / "b", quiet=True)
    resumed, _ = train_transcoders(data, L, D, cfg, scales, tmp_path / "b", quiet=True)
    for a, b in zip(whole.W_dec + whole.W_enc, resumed.W_dec + resumed.W_enc):
        assert torch.equal(a, b)
    other = CLTConfig(d_sae=16, activation=activation, k=4, steps=30, checkpoint_every=10)
    with pytest.raises(MechscopeError, match="other settings"):
        train_transcoders(data, L, D, other, scales, tmp_path / "b", quiet=True)


def test_clt_fits_cross_layer_data_better(tmp_path) -> None:
    """On data whose outputs read earlier layers' features, a CLT explains far more variance
    than per-layer transcoders of the same width."""
    fvu = {}
    for cross in (True, False):
        cfg = CLTConfig(d_sae=24, cross_layer=cross, activation="topk", k=3, steps=STEPS, lr=1e-2,
                        batch_size=128, checkpoint_every=1000)  # fmt: skip
        _, hist = train_transcoders(planted(STEPS, 128), L, D, cfg, (torch.ones(L), torch.ones(L)),
                                    tmp_path / str(cross), quiet=True)  # fmt: skip
        fvu[cross] = hist[-1]["fvu"]
    assert fvu[True] < 0.5 * fvu[False], fvu
