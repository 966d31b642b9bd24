"""Oracle: induction, previous-token and duplicate-token scores on SmolLM2 against TransformerLens.

TransformerLens's head detector (``transformer_lens.head_detector``) builds the same detection
patterns from the tokens (``get_*_head_detection_pattern``) and scores a head with
``compute_head_attention_similarity_score(..., error_measure="mul")`` on the attention patterns of
its ``TransformerBridge``, one sequence at a time, as ``detect_head`` does. Its score divides by all
``pos`` query rows, ours by the |Q| rows that have a target, so ``ours = TL * pos / |Q|`` exactly
(|Q| = seq_len for induction and duplicate-token, pos - 1 for previous-token). ``detect_head`` itself
takes text and re-tokenises it, so random token sequences go through its building blocks instead.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

import mechscope
from mechscope.heads import head_scores, repeated_tokens

pytestmark = pytest.mark.slow
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
N_SEQS, SEQ_LEN = 4, 20


@pytest.fixture(scope="module")
def bridge(smollm2_hf_copy: tuple[Any, Any]) -> Any:
    from transformer_lens.model_bridge import TransformerBridge

    hf, tokenizer = smollm2_hf_copy
    return TransformerBridge.boot_transformers(
        HUB_ID, hf_model=copy.deepcopy(hf), tokenizer=tokenizer
    )


def tl_scores(bridge: Any, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    from transformer_lens import head_detector as hd

    kinds = {
        "induction": hd.get_induction_head_detection_pattern,
        "previous_token": hd.get_previous_token_head_detection_pattern,
        "duplicate_token": hd.get_duplicate_token_head_detection_pattern,
    }
    out = {k: torch.zeros(30, 9) for k in kinds}
    for row in tokens:
        with torch.inference_mode():
            _, cache = bridge.run_with_cache(row[None], remove_batch_dim=True)
        for kind, make in kinds.items():
            detection = make(row[None])
            for layer in range(30):
                pattern = cache[f"blocks.{layer}.attn.hook_pattern"]  # [head q k]
                for head in range(9):
                    out[kind][layer, head] += hd.compute_head_attention_similarity_score(
                        pattern[head], detection, exclude_bos=False,
                        exclude_current_token=False, error_measure="mul",
                    )  # fmt: skip
    return {k: v / len(tokens) for k, v in out.items()}


def test_scores_match_transformerlens(smollm2: mechscope.HookedModel, bridge: Any) -> None:
    tokens = repeated_tokens(smollm2, N_SEQS, SEQ_LEN, seed=7)  # [bos] + x + x
    pos = tokens.shape[1]
    kinds = ["induction", "previous_token", "duplicate_token"]
    ours = head_scores(smollm2, kinds, tokens=tokens).scores
    theirs = tl_scores(bridge, tokens)
    rows = {"induction": SEQ_LEN, "duplicate_token": SEQ_LEN, "previous_token": pos - 1}
    for kind, n_rows in rows.items():
        expected = theirs[kind] * pos / n_rows
        torch.testing.assert_close(ours[kind], expected, atol=2e-4, rtol=0)
        assert float(expected.max()) > 0.5  # a real signal is compared, not all zeros
    # the same heads come out on top
    for kind in rows:
        assert ours[kind].flatten().argmax() == theirs[kind].flatten().argmax()
