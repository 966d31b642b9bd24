"""One call form for every analysis of paired prompts: ``fn(model, batch, metric(logits, batch))``.

The token form ``fn(model, clean_tokens, corrupt_tokens, metric(logits))`` is deprecated: it
warns and gives the same numbers. A padded batch (prompts of different lengths) reads each
prompt's own last token, as per-prompt runs do.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from mechscope import HookedModel, MechscopeError
from mechscope.ablation import ablation_effect
from mechscope.attribution import attribution_patch, attribution_patch_sweeps
from mechscope.models.tiny import VOCAB, tiny_model
from mechscope.patching import patch
from mechscope.patching.path import path_patch, path_patch_heads
from mechscope.tasks.base import TaskBatch
from mechscope.tasks.metrics import logit_diff

B, P = 3, 6


def toy(lengths: tuple[int, ...] = (P, P, P), seed: int = 0) -> TaskBatch:
    """Prompts right-padded to P; the corrupted ones differ at positions 1 and 3."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(2, VOCAB, (B, P), generator=g)
    corrupt = clean.clone()
    corrupt[:, [1, 3]] = torch.randint(2, VOCAB, (B, 2), generator=g)
    mask = torch.zeros(B, P, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    answers = torch.randint(2, VOCAB, (2, B), generator=g)
    last = torch.tensor(lengths) - 1
    return TaskBatch("toy", clean, corrupt, mask, mask, answers[0], answers[1], last, last)


@pytest.fixture(scope="module")
def model() -> HookedModel:
    return HookedModel(tiny_model("llama"))


def bound(batch: TaskBatch):
    return lambda logits: logit_diff(logits, batch)


def legacy(fn, *args, **kwargs):
    """Call the deprecated token form, checking that it warns."""
    with pytest.warns(DeprecationWarning, match="TaskBatch"):
        return fn(*args, **kwargs)


def test_patch_new_form_equals_the_token_form(model: HookedModel) -> None:
    batch = toy()
    for sweep in ("resid_pre", "attn_head", "v"):
        for direction in ("denoise", "noise"):
            new = patch(model, batch, logit_diff, sweep, direction=direction)
            old = legacy(
                patch, model, batch.clean_tokens, batch.corrupt_tokens, bound(batch), sweep,
                direction=direction,
            )  # fmt: skip
            torch.testing.assert_close(new.values, old.values, atol=1e-5, rtol=0)
            assert (new.clean, new.corrupt) == pytest.approx((old.clean, old.corrupt), abs=1e-5)
            assert new.to_dict()["axes"] == list(old.axes)


def test_padded_batch_reads_each_prompts_last_token(model: HookedModel) -> None:
    """Prompt i alone (its real tokens only) gives row i of the padded batch's patching; a patch
    of a padding position changes nothing (the prompt never reads it): its clean metric."""
    batch = toy(lengths=(6, 4, 5))
    got = patch(model, batch, logit_diff, "resid_pre", direction="noise")
    rows = []
    for i in range(B):
        one, n = _one(batch, i), int(batch.last_pos[i]) + 1
        values = patch(model, one, logit_diff, "resid_pre", direction="noise").values
        with torch.no_grad():
            clean = float(logit_diff(model(one.clean_tokens), one))
        rows.append(torch.nn.functional.pad(values, (0, P - n), value=clean))
    torch.testing.assert_close(got.values, torch.stack(rows).mean(0), atol=1e-4, rtol=0)


def _one(batch: TaskBatch, i: int) -> TaskBatch:
    """Prompt i of ``batch`` alone, without its padding."""
    n, r = int(batch.last_pos[i]) + 1, slice(i, i + 1)
    return TaskBatch(
        "one", batch.clean_tokens[r, :n], batch.corrupt_tokens[r, :n], batch.clean_mask[r, :n],
        batch.corrupt_mask[r, :n], batch.answer_ids[r], batch.wrong_ids[r], batch.last_pos[r],
        batch.last_pos[r],
    )  # fmt: skip


def test_attribution_new_form_equals_the_token_form(model: HookedModel) -> None:
    batch = toy()
    new = attribution_patch_sweeps(model, batch, logit_diff, ["attn_head", "resid_pre"])
    old = legacy(
        attribution_patch_sweeps, model, batch.clean_tokens, batch.corrupt_tokens, bound(batch),
        ["attn_head", "resid_pre"],
    )  # fmt: skip
    for sweep in new:
        torch.testing.assert_close(new[sweep].values, old[sweep].values, atol=1e-5, rtol=0)
    one = attribution_patch(model, batch, logit_diff, "attn_head", direction="noise")
    old_one = legacy(
        attribution_patch, model, batch.clean_tokens, batch.corrupt_tokens, bound(batch),
        "attn_head", direction="noise",
    )  # fmt: skip
    torch.testing.assert_close(one.values, old_one.values, atol=1e-5, rtol=0)
    assert one.to_dict()["method"] == "attribution_patching"


def test_path_patching_new_form_equals_the_token_form(model: HookedModel) -> None:
    batch = toy()
    tokens = (batch.clean_tokens, batch.corrupt_tokens, bound(batch))
    new = path_patch(model, batch, logit_diff, "L0H1,MLP0", "L2H3.q")
    old = legacy(path_patch, model, *tokens, "L0H1,MLP0", "L2H3.q")
    assert float(new.values) == pytest.approx(float(old.values), abs=1e-5)
    new = path_patch(model, batch, logit_diff, "L1H2")  # receivers default to the logits
    old = legacy(path_patch, model, *tokens, "L1H2")
    assert float(new.values) == pytest.approx(float(old.values), abs=1e-5)
    new_heads = path_patch_heads(model, batch, logit_diff, quiet=True)
    old_heads = legacy(path_patch_heads, model, *tokens, quiet=True)
    torch.testing.assert_close(new_heads.values, old_heads.values, atol=1e-5, rtol=0)


def test_the_new_form_does_not_warn(model: HookedModel) -> None:
    batch = toy()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        patch(model, batch, logit_diff, "attn_head")
        path_patch(model, batch, logit_diff, "L0H0")
        attribution_patch(model, batch, logit_diff, "attn_head")
        ablation_effect(model, batch, "L0H0", "zero", logit_diff)


def test_one_check_of_each_kind(model: HookedModel) -> None:
    batch = toy()
    shifted = toy(lengths=(6, 5, 6))
    misaligned = TaskBatch(
        "bad", batch.clean_tokens, batch.corrupt_tokens, batch.clean_mask, shifted.clean_mask,
        batch.answer_ids, batch.wrong_ids, batch.last_pos, batch.last_pos,
    )  # fmt: skip
    calls = [
        lambda b, **kw: patch(model, b, logit_diff, "attn_head", **kw),
        lambda b, **kw: attribution_patch(model, b, logit_diff, "attn_head", **kw),
        lambda b, **kw: path_patch(model, b, logit_diff, "L0H0", **kw),
    ]
    for call in calls:
        with pytest.raises(MechscopeError, match="align token by token"):
            call(misaligned)
        with pytest.raises(MechscopeError, match="direction must be"):
            call(batch, direction="sideways")
        with pytest.raises(MechscopeError, match="TaskBatch carries its own masks"):
            call(batch, attention_mask=batch.clean_mask)
    with pytest.raises(MechscopeError, match="takes a TaskBatch"):
        patch(model, "When Mary and John", logit_diff, "attn_head")  # type: ignore[arg-type]
    with pytest.raises(MechscopeError, match="got 2 arguments after the metric"):
        patch(model, batch, logit_diff, "attn_head", "resid_pre")


def test_result_schema_and_top() -> None:
    from mechscope.patching import PatchResult

    r = PatchResult(
        "attn_head", ("layer", "head"), torch.tensor([[1.0, 3.0], [0.0, 2.5]]), 2.0, 0.0, "denoise"
    )
    d = r.to_dict()
    assert d["method"] == "exact" and d["axes"] == ["layer", "head"]
    assert d["normalized"] == [[0.5, 1.5], [0.0, 1.25]] and d["values"][0] == [1.0, 3.0]
    assert r.top(2) == [({"layer": 0, "head": 1}, 1.5), ({"layer": 1, "head": 1}, 1.25)]
    flat = PatchResult(
        "resid_pre", ("layer", "pos"), torch.tensor([[-4.0, 1.0]]), 1.0, 1.0, "noise"
    )
    assert flat.to_dict()["normalized"] is None  # clean = corrupt: undefined
    assert flat.top(1) == [({"layer": 0, "pos": 0}, -4.0)]  # then the raw values rank
