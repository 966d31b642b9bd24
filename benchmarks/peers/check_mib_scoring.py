"""Check mechscope's MIB scores against MIB's own scoring function on the same scores.

    python benchmarks/peers/check_mib_scoring.py PATH_TO_MIB_CIRCUIT_TRACK_CHECKOUT

It scores EAP edges of a tiny random Llama with ``mechscope.circuits.mib.mib_score``, then runs
MIB's ``evaluate_area_under_curve`` (``MIB_circuit_track/evaluation.py``, unchanged, read from the
checkout) with its graph and evaluation calls stubbed to return mechscope's measured metric values
for the same circuits in the same order, and prints both CPR (signed ranking) and CMD (|score|
ranking) and the edge counts each asked for. The checkout is not shipped; this script does not
fetch it. Checked with commit b759df3 of hannamw/MIB-circuit-track.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "circuits"))


def load_mib(checkout: Path, values: list[float], asked: list[int]) -> types.ModuleType:
    """MIB's evaluation module with ``eap.graph`` / ``eap.evaluate`` stubbed."""
    calls = iter(values)
    names = ("eap", "eap.graph", "eap.evaluate", "transformer_lens")
    eap, graph_mod, evaluate_mod, tl = (types.ModuleType(n) for n in names)
    graph_mod.Graph = tl.HookedTransformer = object  # type annotations only
    evaluate_mod.evaluate_baseline = lambda *a, **k: torch.tensor([values[0]], dtype=torch.float64)
    evaluate_mod.evaluate_graph = lambda *a, **k: torch.tensor([next(calls)], dtype=torch.float64)
    sys.modules.update(dict(zip(names, (eap, graph_mod, evaluate_mod, tl))))
    next(calls)  # the baseline is the first value
    spec = importlib.util.spec_from_file_location(
        "mib_evaluation", checkout / "MIB_circuit_track" / "evaluation.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


class StubGraph:
    def __init__(self, n_edges: int, asked: list[int]) -> None:
        self.edges = [None] * n_edges
        self.asked = asked

    def apply_topn(self, n: int, absolute: bool, level: str = "edge", prune: bool = True) -> None:
        self.asked.append(n)

    def weighted_edge_count(self) -> int:
        return self.asked[-1]


def main(checkout: Path) -> None:
    from conftest import hooked, toy_batch
    from mechscope.circuits.mib import mib_score

    model, batch = hooked("llama"), toy_batch(b=8)
    ours = mib_score(model, batch, method="eap", n_boot=10)
    # mechscope's batch means: faithfulness f = (v - c) / (b - c) with b = 1, c = 0 exactly
    for absolute, curve, ours_value, name in (
        (False, ours.signed, ours.cpr, "CPR (area_under, signed)"),
        (True, ours.absolute, ours.cmd, "CMD (area_from_1, |score|)"),
    ):
        asked: list[int] = []
        mib = load_mib(checkout, [1.0, 0.0, *curve], asked)
        out = mib.evaluate_area_under_curve(
            None, StubGraph(ours.meta["total_edges"], asked), None, None, quiet=True,
            absolute=absolute,
        )  # fmt: skip
        theirs = out[1] if not absolute else out[2]
        print(
            f"{name}: mechscope {ours_value:.10f}  MIB {theirs:.10f}  diff {ours_value - theirs:.2e}"
        )
        print(f"  edge counts: mechscope {ours.n_edges}  MIB {asked[1:]}")
        assert abs(ours_value - theirs) < 1e-12 and ours.n_edges == asked[1:]
    print("MIB scoring: identical")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} PATH_TO_MIB_CIRCUIT_TRACK_CHECKOUT")
    main(Path(sys.argv[1]))
