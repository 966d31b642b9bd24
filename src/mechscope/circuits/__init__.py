"""Automatic circuit discovery: the EAP graph, EAP / EAP-IG edge scores, circuits, faithfulness.

Usage::

    scored = attribute(model, batch, method="eap-ig", steps=5)  # every edge, with scores
    circuit = scored.top_fraction(0.01)  # or .top_n / .threshold / .greedy
    faithfulness(model, batch, circuit)  # 0 = corrupted run, 1 = clean run
    render.save(circuit, "circuit.html")  # self-contained picture
    nodes = attribute_nodes(model, batch)  # attribution patching of heads and MLPs; top_nodes
    acdc(model, batch, threshold=0.01)  # the slow exact reference (tiny models)
    run = discover(model, batch, method="eap-ig", ungroup_kv=True)  # all of it, as the CLI
"""

from mechscope.circuits import render
from mechscope.circuits.acdc import acdc
from mechscope.circuits.circuit import Circuit, compare
from mechscope.circuits.eap import METHODS, attribute
from mechscope.circuits.faithfulness import (
    Evaluator,
    Smallest,
    curve_sizes,
    faithfulness,
    faithfulness_curve,
    first_reaching,
    geometric_sizes,
    smallest_faithful,
)
from mechscope.circuits.graph import Graph, edge_count
from mechscope.circuits.node_ap import attribute_nodes, top_nodes
from mechscope.circuits.pipeline import CURVE_FRACTIONS, CircuitRun, curve_edges, discover

__all__ = [
    "CURVE_FRACTIONS",
    "METHODS",
    "Circuit",
    "CircuitRun",
    "acdc",
    "Evaluator",
    "Graph",
    "Smallest",
    "attribute",
    "attribute_nodes",
    "compare",
    "curve_edges",
    "curve_sizes",
    "discover",
    "edge_count",
    "faithfulness",
    "faithfulness_curve",
    "first_reaching",
    "geometric_sizes",
    "render",
    "smallest_faithful",
    "top_nodes",
]
