"""The node-spec grammar: parsing, round trips, expansion against a model, and errors."""

from __future__ import annotations

import pytest

from mechscope.ablation import (
    GRAMMAR,
    Node,
    all_components,
    complement,
    expand,
    format_nodes,
    parse_node,
    parse_nodes,
)
from mechscope.errors import MechscopeError
from mechscope.families import Dims

DIMS = Dims(n_layers=4, d_model=8, n_heads=3, n_kv_heads=1, d_head=2, d_mlp=5, d_vocab=11, n_ctx=9)


def test_parse_each_item_kind() -> None:
    assert parse_nodes("L5H3,L7H*,L9,MLP4,L3N120") == (
        Node("head", 5, 3),
        Node("head", 7, None),
        Node("layer", 9),
        Node("mlp", 4),
        Node("neuron", 3, 120),
    )


@pytest.mark.parametrize("spec", ["L5H3,L7H*,L9,MLP4,L3N120", "L0", "MLP0,L0N0", "L12H11"])
def test_round_trip(spec: str) -> None:
    assert format_nodes(parse_nodes(spec)) == spec
    nodes = parse_nodes(spec)
    assert parse_nodes(format_nodes(nodes)) == nodes


def test_case_spaces_duplicates_and_empty() -> None:
    assert parse_nodes(" l5h3 , mlp4,L5H3 ") == (Node("head", 5, 3), Node("mlp", 4))
    assert parse_nodes("") == ()
    assert parse_nodes([Node("mlp", 1), "L0H0"]) == (Node("mlp", 1), Node("head", 0, 0))


@pytest.mark.parametrize("bad", ["X5", "L5H", "H3", "L5H3H2", "MLP", "L-1", "L5N*", "L1.5"])
def test_bad_item_names_item_and_grammar(bad: str) -> None:
    with pytest.raises(MechscopeError) as err:
        parse_nodes(f"L0H0,{bad}")
    message = str(err.value)
    assert repr(bad) in message and GRAMMAR in message and "\n" not in message


def test_empty_item_is_an_error() -> None:
    with pytest.raises(MechscopeError, match="empty item"):
        parse_nodes("L0H0,,MLP1")


def test_expand_wildcards_and_layers_in_forward_order() -> None:
    got = expand("MLP2,L1H*,L0,L0H1", DIMS)
    heads = lambda layer: [Node("head", layer, h) for h in range(3)]  # noqa: E731
    assert got == (*heads(0), Node("mlp", 0), *heads(1), Node("mlp", 2))


@pytest.mark.parametrize(
    ("spec", "what"), [("L4H0", "layers 0..3"), ("L1H3", "heads 0..2"), ("L0N5", "neurons 0..4")]
)
def test_expand_checks_ranges(spec: str, what: str) -> None:
    with pytest.raises(MechscopeError, match=what):
        expand(spec, DIMS)


def test_complement() -> None:
    everything = all_components(DIMS)
    assert len(everything) == 4 * (3 + 1)
    assert complement(everything, DIMS) == ()
    assert complement("", DIMS) == everything
    rest = complement("L0,L1H2,L2N3", DIMS)
    assert Node("head", 1, 2) not in rest and Node("mlp", 0) not in rest
    assert Node("mlp", 2) not in rest  # partly kept MLP: its other neurons are ablated instead
    assert [n.index for n in rest if n.kind == "neuron"] == [0, 1, 2, 4]
    assert Node("mlp", 1) in rest and Node("head", 1, 0) in rest


def test_single_item_and_node_validation() -> None:
    assert parse_node("MLP3") == Node("mlp", 3)
    with pytest.raises(MechscopeError):
        Node("neuron", 1)
    with pytest.raises(MechscopeError):
        Node("attn", 1)  # type: ignore[arg-type]
