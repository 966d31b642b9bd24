"""The phase change of 2 features in 1 dimension: training against the exact expected loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mechscope.errors import MechscopeError
from mechscope.toys.phase import (
    DEDICATED,
    NOT_REPRESENTED,
    PHASES,
    SUPERPOSITION,
    classify_extra,
    expected_loss,
    expected_phase_diagram,
    phase_diagram,
)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_classify_extra_reads_the_three_phases() -> None:
    W = np.array([[[1.0, 0.02]], [[0.01, 1.0]], [[0.9, -1.0]], [[0.3, 0.8]]])
    assert classify_extra(W).tolist() == [NOT_REPRESENTED, DEDICATED, SUPERPOSITION, DEDICATED]
    assert PHASES[SUPERPOSITION] == "superposition"


@pytest.mark.parametrize("p", [1.0, 0.3, 0.05])
def test_expected_loss_matches_closed_forms(p: float) -> None:
    r = 2.0
    imp = torch.tensor([[1.0, r]], dtype=torch.float64)
    dens = torch.tensor([p], dtype=torch.float64)
    # feature 1 alone, the bias outputs E[x_2] = p/2: the loss is r Var(x_2) = r (p/3 - p^2/4)
    alone = expected_loss(
        torch.tensor([[[1.0, 0.0]]], dtype=torch.float64),
        torch.tensor([[0.0, p / 2]], dtype=torch.float64),
        imp,
        dens,
    )
    assert alone.item() == pytest.approx(r * (p / 3 - p**2 / 4), rel=1e-9)
    # antipodal W = [1, -1], b = 0: wrong only when both are present, by min(x_1, x_2) each,
    # and E[min(u, v)^2] = 1/6 for independent uniforms
    pair = expected_loss(
        torch.tensor([[[1.0, -1.0]]], dtype=torch.float64),
        torch.zeros(1, 2, dtype=torch.float64),
        imp,
        dens,
    )
    assert pair.item() == pytest.approx((1 + r) * p**2 / 6, rel=2e-3)  # quadrature over a kink


def test_expected_phase_diagram_has_the_papers_shape() -> None:
    r, p = np.array([0.1, 0.5, 2.0, 10.0]), np.array([1.0, 0.3, 0.03])
    diagram = expected_phase_diagram(r, p)
    assert diagram.phase.tolist() == [
        [NOT_REPRESENTED, NOT_REPRESENTED, SUPERPOSITION],  # a weak extra feature is dropped
        [NOT_REPRESENTED, SUPERPOSITION, SUPERPOSITION],  # until the features are sparse
        [DEDICATED, SUPERPOSITION, SUPERPOSITION],
        [DEDICATED, DEDICATED, SUPERPOSITION],  # a strong one takes the dimension
    ]
    # closed-form check: wherever even the plain pair W = [1, -1], b = 0 ((1 + r) p^2 / 6) beats
    # the better single feature (min(r, 1) Var x), the optimum must be superposition
    plain = (1 + r[:, None]) * p**2 / 6
    single = np.minimum(r, 1)[:, None] * (p / 3 - p**2 / 4)
    assert np.all(diagram.phase[plain < single] == SUPERPOSITION)
    assert np.all(diagram.losses <= np.minimum(plain, single) + 1e-6)


def test_trained_phase_diagram_agrees_with_the_expected_one() -> None:
    diagram = phase_diagram([0.2, 5.0], [1.0, 0.3, 0.03], seed=0)
    assert diagram.W.shape == (2, 3, 1, 2) and diagram.losses.shape == (2, 3)
    assert diagram.expected is not None
    assert diagram.phase.tolist() == diagram.expected.tolist()
    assert diagram.phase.tolist() == [
        [NOT_REPRESENTED, NOT_REPRESENTED, SUPERPOSITION],
        [DEDICATED, DEDICATED, SUPERPOSITION],
    ]
    assert diagram.to_dict()["agreement"] == 1.0


def test_phase_grid_errors() -> None:
    with pytest.raises(MechscopeError, match="densities"):
        phase_diagram([1.0], [0.0])
    with pytest.raises(MechscopeError, match="positive"):
        expected_phase_diagram([-1.0], [0.5])
