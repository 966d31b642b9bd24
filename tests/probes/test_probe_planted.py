"""Planted ground truth: a label written into the residual stream at one layer is found there.

Labels are random per text, so nothing before the plant can predict them (chance). A hook adds
``±alpha * u`` to ``blocks.1.hook_resid_post``; from there on the residual stream carries the
label, and a probe must read it (accuracy ~1), while the earlier sites stay at chance.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from mechscope.models.hooked import HookedModel
from mechscope.probes import from_rows, probe


@contextmanager
def planted(model: HookedModel, labels: dict[tuple[int, ...], int], layer: int) -> Iterator[None]:
    """Add ``(2 * label - 1) * 20 * u`` at every position of ``blocks.{layer}.hook_resid_post``."""
    u = torch.nn.functional.normalize(
        torch.randn(model.dims.d_model, generator=torch.Generator().manual_seed(1)), dim=0
    )
    seen: dict[str, torch.Tensor] = {}

    def grab(_module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        ids, mask = kwargs["input_ids"], kwargs["attention_mask"]
        seen["sign"] = torch.tensor(
            [2.0 * labels[tuple(r[m.bool()].tolist())] - 1 for r, m in zip(ids, mask, strict=True)]
        )

    def plant(t: torch.Tensor, _hook: object) -> torch.Tensor:
        return t + 20.0 * seen["sign"][:, None, None] * u

    handle = model.hf.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with model.hooks([(f"blocks.{layer}.hook_resid_post", plant)]):
            yield
    finally:
        handle.remove()


def planted_rows(model: HookedModel, texts: list[str], seed: int = 0) -> tuple[list, dict]:
    rng = random.Random(seed)
    rows = [{"text": t, "label": rng.randint(0, 1)} for t in texts]
    keys = {tuple(model.tokenizer(r["text"])["input_ids"]): r["label"] for r in rows}
    return rows, keys


@pytest.mark.parametrize("kind", ["logistic", "linear"])
def test_probe_finds_the_planted_direction_from_its_layer_on(tiny, random_texts, kind) -> None:
    rows, keys = planted_rows(tiny, random_texts(300))
    with planted(tiny, keys, layer=1):
        result = probe(
            tiny, from_rows(rows), ["hook_embed", "blocks.*.hook_resid_post"], kind=kind, quiet=True
        )
    by_site = {s.site: s for s in result.scores}
    for name in ("hook_embed", "blocks.0.hook_resid_post"):  # before the plant: chance
        assert by_site[name].accuracy < 0.7 and by_site[name].cv_mean < 0.65
    # the embedding is a function of the token alone and the 40 word types fit in 48 dimensions:
    # the control task (a random label per type) is memorised exactly, as Hewitt & Liang warn
    assert by_site["hook_embed"].control_accuracy == 1.0
    for layer in (1, 2):  # the plant and the layer after it
        s = by_site[f"blocks.{layer}.hook_resid_post"]
        assert s.accuracy == 1.0 and s.cv_mean > 0.98
        assert s.selectivity == pytest.approx(s.accuracy - s.control_accuracy)
        assert s.selectivity > 0.3
