"""Oracle: exact patching gives TransformerLens's ``get_act_patch_*`` numbers on SmolLM2-135M.

TransformerLens 4.3's patching functions accept a ``TransformerBridge`` (booted here on its own
copy of the HF model; the bridge computes attention eagerly, so mechscope uses ``attn="eager"``).
They run one forward per patch, so each is checked on a few cells only (``index_df``), against
mechscope's sweep of the cells' layers (``layers=``; the full sweeps are checked against brute
force in ``test_patch_brute_force.py``). ``hook_resid_mid`` is left out: the bridge aliases it to the MLP's input
(see ``tests/oracle/test_transformerlens.py``). Under GQA, TransformerLens sweeps k and v over the
key/value heads (``cfg.n_key_value_heads``), as mechscope does.
"""

from __future__ import annotations

import copy
from typing import Any

import pandas as pd
import pytest
import torch

import mechscope
from mechscope.patching import patch

pytestmark = pytest.mark.slow

HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
CLEAN = [
    "When Mary and John went to the store, John gave a drink to",
    "When Tom and Sarah went to the park, Sarah gave a ball to",
]
CORRUPT = [
    "When Mary and John went to the store, Mary gave a drink to",
    "When Tom and Sarah went to the park, Tom gave a ball to",
]
TOL = 1e-3
# sweep -> (TransformerLens function, its site, cells as (layer, ...) tuples)
CELLS: dict[str, tuple[str, str, list[tuple[int, ...]]]] = {
    "resid_pre": (
        "get_act_patch_resid_pre",
        "hook_resid_pre",
        [(0, 1), (0, 9), (5, 9), (16, 3), (22, 13), (29, 9)],
    ),
    "attn_head": (
        "get_act_patch_attn_head_out_all_pos",
        "attn.hook_z",
        [(0, 0), (3, 8), (12, 4), (20, 1), (25, 7), (29, 2)],
    ),
    "attn_out": ("get_act_patch_attn_out", "hook_attn_out", [(4, 9), (27, 13)]),
    "mlp_out": ("get_act_patch_mlp_out", "hook_mlp_out", [(0, 9), (18, 13)]),
    "attn_head_pos": (
        "get_act_patch_attn_head_out_by_pos",
        "attn.hook_z",
        [(9, 13, 3), (21, 13, 5)],
    ),
    "q": ("get_act_patch_attn_head_q_all_pos", "attn.hook_q", [(14, 6), (28, 0)]),
    "k": ("get_act_patch_attn_head_k_all_pos", "attn.hook_k", [(2, 1), (19, 2)]),
    "v": ("get_act_patch_attn_head_v_all_pos", "attn.hook_v", [(7, 0), (23, 2)]),
    "pattern": ("get_act_patch_attn_head_pattern_all_pos", "attn.hook_pattern", [(10, 2), (24, 8)]),
}


@pytest.fixture(scope="module")
def setup(smollm2_hf_copy: tuple[Any, Any]) -> tuple[Any, mechscope.HookedModel, Any]:
    from transformer_lens.model_bridge import TransformerBridge

    hf, tokenizer = smollm2_hf_copy
    bridge = TransformerBridge.boot_transformers(
        HUB_ID, hf_model=copy.deepcopy(hf), tokenizer=tokenizer
    )
    model = mechscope.HookedModel(copy.deepcopy(hf), tokenizer, attn="eager")
    clean, m1 = model.tokenize(CLEAN)
    corrupt, m2 = model.tokenize(CORRUPT)
    assert m1.all() and m2.all() and clean.shape == corrupt.shape
    io = [tokenizer(" Mary")["input_ids"][0], tokenizer(" Tom")["input_ids"][0]]
    s = [tokenizer(" John")["input_ids"][0], tokenizer(" Sarah")["input_ids"][0]]
    io_t, s_t = torch.tensor(io), torch.tensor(s)

    def logit_diff(logits: torch.Tensor) -> torch.Tensor:
        last = logits[:, -1]
        rows = torch.arange(last.shape[0])
        return last[rows, io_t] - last[rows, s_t]

    return bridge, model, (clean, corrupt, logit_diff)


def cell_layers(sweep: str) -> list[int]:
    return sorted({cell[0] for cell in CELLS[sweep][2]})


def tl_cells(bridge: Any, sweep: str, base: torch.Tensor, source: torch.Tensor, metric) -> Any:
    """TransformerLens's values at the sweep's cells (the index names matter only to its output)."""
    from transformer_lens import patching

    name, site, cells = CELLS[sweep]
    df = pd.DataFrame(cells, columns=["layer", "pos", "head"][: len(cells[0])])
    with torch.no_grad():
        names = [f"blocks.{layer}.{site}" for layer in range(bridge.cfg.n_layers)]
        _, cache = bridge.run_with_cache(source, names_filter=names)
        fn = getattr(patching, name)
        return fn(
            bridge, base, cache, lambda x: metric(x).mean(), index_axis_names=None, index_df=df
        )


@pytest.mark.parametrize("direction", ["denoise", "noise"])
@pytest.mark.parametrize("sweep", ["resid_pre", "attn_head"])
def test_matches_transformerlens(setup: tuple, sweep: str, direction: str) -> None:
    bridge, model, (clean, corrupt, metric) = setup
    # noising also unembeds only the last position (the metric reads nothing else)
    last = torch.full((clean.shape[0],), clean.shape[1] - 1) if direction == "noise" else None
    # one full sweep (every layer) is checked; the other three sweep only their cells' layers
    layers = None if (sweep, direction) == ("resid_pre", "denoise") else cell_layers(sweep)
    ours = patch(model, clean, corrupt, metric, sweep, direction=direction, read_pos=last,
                 layers=layers)  # fmt: skip
    base, source = (corrupt, clean) if direction == "denoise" else (clean, corrupt)
    theirs = tl_cells(bridge, sweep, base, source, metric)
    cells = CELLS[sweep][2]
    got = torch.stack([ours.values[cell] for cell in cells])
    assert (got - theirs.cpu()).abs().max() <= TOL, (got, theirs)
    assert abs(ours.clean - ours.corrupt) > 1.0, "the IOI pair must move the logit difference"


@pytest.mark.parametrize("sweep", [s for s in CELLS if s not in ("resid_pre", "attn_head")])
def test_other_sweeps_match_transformerlens(setup: tuple, sweep: str) -> None:
    bridge, model, (clean, corrupt, metric) = setup
    layers = cell_layers(sweep)
    ours = patch(model, clean, corrupt, metric, sweep, layers=layers)
    assert ours.values.shape[0] == model.dims.n_layers
    others = [i for i in range(model.dims.n_layers) if i not in layers]
    assert ours.values[others].isnan().all() and not ours.values[layers].isnan().any()
    theirs = tl_cells(bridge, sweep, corrupt, clean, metric)
    got = torch.stack([ours.values[cell] for cell in CELLS[sweep][2]])
    assert (got - theirs.cpu()).abs().max() <= TOL, (got, theirs)
