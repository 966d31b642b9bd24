"""Views of toy models of superposition: built from arrays, self-contained, right shapes."""

from __future__ import annotations

import numpy as np
import pytest

from mechscope.errors import MechscopeError
from mechscope.toys.phase import PhaseDiagram
from mechscope.toys.superposition import ToyResult
from mechscope.viz.html import png_bytes
from mechscope.viz.superposition import (
    directions_figure,
    gram_figure,
    norms_figure,
    overview_figure,
    phase_figure,
    superposition_page,
    sweep_titles,
)


def pentagon_result() -> ToyResult:
    """Two planted instances: 2 orthogonal features, and a regular pentagon."""
    dense = np.zeros((2, 5))
    dense[0, 0] = dense[1, 1] = 1.0
    theta = 2 * np.pi * np.arange(5) / 5
    pentagon = 1.1 * np.stack([np.cos(theta), np.sin(theta)])
    W = np.stack([dense, pentagon])
    return ToyResult(
        W=W,
        b=np.zeros((2, 5)),
        losses=np.array([0.1, 0.01]),
        history=np.zeros((3, 2)),
        sparsities=np.array([0.0, 0.95]),
        importance=np.tile(0.9 ** np.arange(5), (2, 1)),
        steps=10,
        seed=0,
    )


def diagram() -> PhaseDiagram:
    phase = np.array([[0, 2], [1, 2]])
    expected = np.array([[0, 2], [1, 1]])
    return PhaseDiagram(
        np.array([0.2, 5.0]), np.array([1.0, 0.03]), phase, np.zeros((2, 2, 1, 2)),
        np.zeros((2, 2)), expected,
    )  # fmt: skip


def test_page_is_self_contained_and_reports_the_geometry() -> None:
    html = superposition_page(pentagon_result(), diagram())
    assert html.startswith("<!DOCTYPE html>")
    assert "http" not in html and "<script src" not in html
    assert html.count("<img") == 4  # directions, W^T W, norms, phase diagram
    assert "agreement 75%" in html  # one of the four cells disagrees
    assert "<td>pentagon</td>" in html  # the polygon column of the summary table


def test_figures_have_one_panel_per_instance() -> None:
    result = pentagon_result()
    titles = sweep_titles(result.sparsities)
    assert titles == ["1-S = 1", "1-S = 0.05"]
    assert len(directions_figure(result.W, result.importance, titles).axes) == 2
    assert len(gram_figure(result.W, titles).axes) == 3  # and a colour bar
    assert len(norms_figure(result.W, titles).axes) == 2
    fig = phase_figure(np.array([0.2, 5.0]), np.array([1.0, 0.03]), diagram().phase)
    assert png_bytes(fig).startswith(b"\x89PNG")
    assert png_bytes(overview_figure(result, diagram())).startswith(b"\x89PNG")


def test_directions_need_two_dimensions() -> None:
    with pytest.raises(MechscopeError, match="W \\[instance 2 n\\]"):
        directions_figure(np.zeros((2, 3, 5)), np.ones(5))
