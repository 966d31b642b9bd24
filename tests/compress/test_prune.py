"""Structured pruning: whole heads and neurons go to width 0, their outputs are exactly zero, and
the freed bits go to the other groups."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from compress_helpers import GS, tiny_llama, toy_batch

import mechscope
from mechscope.compress import CompressConfig, compress
from mechscope.compress.groups import linear_weights
from mechscope.compress.prune import prune_groups
from mechscope.errors import MechscopeError


def test_prune_marks_whole_units_respecting_gqa() -> None:
    model = tiny_llama()
    layout = linear_weights(model, GS)
    score = torch.rand(layout.n_groups, generator=torch.Generator().manual_seed(0))
    q = next(w for w in layout.weights if w.layer == 0 and w.kind == "q")
    o = next(w for w in layout.weights if w.layer == 0 and w.kind == "o")
    score[q.offset : q.offset + q.n_groups].view(48, -1)[: 3 * 8] = -1.0  # heads 0-2: kv head 0
    score[o.offset : o.offset + o.n_groups].view(48, -1)[:, :3] = -1.0
    pruned = prune_groups(layout, score, 6, 2, 8, 0.2)  # 18 heads -> 3 pruned
    by = {(w.layer, w.kind): pruned[w.offset : w.offset + w.n_groups] for w in layout.weights}
    assert by[0, "q"].view(48, -1)[:24].all() and not by[0, "q"].view(48, -1)[24:].any()
    assert by[0, "o"].view(48, -1)[:, :3].all() and not by[0, "o"].view(48, -1)[:, 3:].any()
    assert by[0, "k"].view(16, -1)[:8].all() and not by[0, "k"].view(16, -1)[8:].any()
    assert not by[1, "q"].any() and not by[0, "down"].any()
    assert int(by[0, "gate"].view(80, -1).all(1).sum() + by[1, "gate"].view(80, -1).all(1).sum()
               + by[2, "gate"].view(80, -1).all(1).sum()) == 48  # 20% of 240 neurons  # fmt: skip


def test_pruned_model_writes_zero_and_keeps_the_budget(
    calib: list[torch.Tensor], tmp_path: Path
) -> None:
    model = tiny_llama()
    config = CompressConfig(bits=6.0, method="awq", group_size=GS, prune=0.25)
    result = compress(model, config, out=tmp_path / "pruned", calib=calib)
    reloaded = mechscope.load(str(tmp_path / "pruned"), progress=False)  # from the packed codes
    with torch.no_grad():
        tokens = toy_batch().clean_tokens
        assert torch.equal(reloaded.forward(tokens), model.forward(tokens))
    assert result.effective_bits <= 6.0 and result.recount.violations == 0
    assert 0 < result.histogram()["all"][0] < 0.5
    names = ["blocks.*.attn.hook_result", "blocks.*.mlp.hook_post"]
    batch = toy_batch()
    with torch.no_grad():
        _, cache = model.run_with_cache(batch.clean_tokens, names=names)
    dead_heads = sum(int((cache[f"blocks.{L}.attn.hook_result"] == 0).all(-1).all(0).all(0).sum())
                     for L in range(3))  # fmt: skip
    dead_neurons = sum(int((cache[f"blocks.{L}.mlp.hook_post"] == 0).all(0).all(0).sum())
                       for L in range(3))  # fmt: skip
    assert dead_heads == 4 and dead_neurons == 60  # 25% of 18 heads, of 240 neurons
    unpruned = compress(tiny_llama(), CompressConfig(bits=6.0, method="awq", group_size=GS),
                        calib=calib)  # fmt: skip
    live = result.widths[result.widths > 0].float().mean()
    assert live > unpruned.widths.float().mean()  # the freed bits went to the other groups


def test_prune_errors() -> None:
    with pytest.raises(MechscopeError, match="not with uniform"):
        compress(tiny_llama(), CompressConfig(bits=6.0, method="uniform", group_size=GS, prune=0.1))
    with pytest.raises(MechscopeError, match="prune fraction"):
        prune_groups(linear_weights(tiny_llama(), GS), torch.zeros(1), 6, 2, 8, 1.5)


def test_prune_frees_a_down_group_when_all_its_neurons_go() -> None:
    """--prune and --prune-neurons share one path (select_units + unit_groups): a down group
    (GS columns of one row) is freed exactly when all GS neurons it reads are pruned."""
    model = tiny_llama()
    layout = linear_weights(model, GS)
    score = torch.rand(layout.n_groups, generator=torch.Generator().manual_seed(1)) + 1.0
    gate = next(w for w in layout.weights if w.layer == 0 and w.kind == "gate")
    score[gate.offset : gate.offset + gate.n_groups].view(80, -1)[: 2 * GS] = 0.0
    pruned = prune_groups(layout, score, 6, 2, 8, (2 * GS + 0.5) / 240)  # 2 GS neurons of 240
    by = {(w.layer, w.kind): pruned[w.offset : w.offset + w.n_groups] for w in layout.weights}
    down = by[0, "down"].view(48, -1)  # [d_model, d_mlp / GS]
    assert down[:, :2].all() and not down[:, 2:].any()
    assert not by[1, "down"].any() and not by[2, "down"].any()
    assert int(by[0, "gate"].view(80, -1).all(1).sum()) == 2 * GS
