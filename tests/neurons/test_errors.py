"""Bad input to the neuron scan is a one-line MechscopeError naming the fix."""

from __future__ import annotations

import pytest
import torch
from neuron_helpers import hooked

from mechscope.errors import MechscopeError
from mechscope.neurons import (
    head_outputs,
    mlp_neurons,
    residual_directions,
    scan,
    unit_positions,
)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda m: mlp_neurons(m, 3), "layer 3 is out of range"),
        (lambda m: mlp_neurons(m, -1), "layer -1 is out of range"),
        (lambda m: mlp_neurons(m, 0, [80]), "neuron 80 is out of range"),
        (lambda m: mlp_neurons(m, 0, []), "empty neuron list"),
        (lambda m: head_outputs(m, 0, [6]), "head 6 is out of range"),
        (lambda m: head_outputs(m, 0, site="q"), "'z' or 'result'"),
        (lambda m: head_outputs(m, 0, direction=torch.ones(5)), "direction must be [8]"),
        (lambda m: residual_directions(m, "blocks.0.hook_resid_pots", torch.ones(48)), "nearest"),
        (lambda m: residual_directions(m, "blocks.0.attn.hook_z", torch.ones(48)), "residual"),
        (lambda m: residual_directions(m, "hook_embed", torch.ones(2, 5)), "d_model=48"),
        (lambda m: residual_directions(m, "hook_embed", torch.zeros(2, 48)), "direction 0 is zero"),
    ],
)
def test_bad_readouts(llama, build, message: str) -> None:
    with pytest.raises(MechscopeError, match=message.replace("[", r"\[").replace("]", r"\]")):
        build(llama)


def test_moe_has_no_dense_neurons() -> None:
    with pytest.raises(MechscopeError, match="mixture of experts"):
        mlp_neurons(hooked("mixtral"), 0)


def test_bad_scans(llama) -> None:
    readout = mlp_neurons(llama, 0)
    with pytest.raises(MechscopeError, match="k >= 1"):
        scan(llama, readout, [torch.zeros(1, 4, dtype=torch.long)], k=0)
    with pytest.raises(MechscopeError, match="no tokens"):
        scan(llama, readout, [])
    ragged = [torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 5, dtype=torch.long)]
    with pytest.raises(MechscopeError, match="fixed-length windows"):
        scan(llama, readout, ragged)
    with pytest.raises(MechscopeError, match="no position after the first"):
        scan(llama, readout, [torch.zeros(3, 1, dtype=torch.long)])
    assert scan(llama, readout, [torch.zeros(3, 1, dtype=torch.long)], include_first=True)
    some = scan(llama, mlp_neurons(llama, 0, [1, 2]), [torch.zeros(1, 4, dtype=torch.long)])
    with pytest.raises(MechscopeError, match="unit 3 was not scanned"):
        unit_positions(some, [3])
