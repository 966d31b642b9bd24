"""IOI's named positions (IO, S1, S2, S2+1) on SmolLM2's tokenizer: they move between templates."""

from __future__ import annotations

from mechscope.causal.data import from_task
from mechscope.tasks.ioi import ioi_positions, make_ioi


def test_ioi_positions_name_the_right_tokens(smol_tokenizer) -> None:
    task = make_ioi(smol_tokenizer, 64, seed=0, corruption="swap")
    batch = task.tokenize(smol_tokenizer)
    found = ioi_positions(task, batch.clean_tokens, smol_tokenizer)
    for i in range(len(task)):
        row = batch.clean_tokens[i]
        word = {k: smol_tokenizer.decode(row[int(v[i])]).strip() for k, v in found.items()}
        assert word["IO"] == task.meta["io"][i] and word["S1"] == word["S2"] == task.meta["s"][i]
        io, s1, s2 = (int(found[k][i]) for k in ("IO", "S1", "S2"))
        assert (io < s1) == (task.meta["order"][i] == "ABBA") and s2 > max(io, s1)
        assert int(found["S2+1"][i]) == s2 + 1
        # the swap corruption changes S2 and nothing else
        changed = (row != batch.corrupt_tokens[i]).nonzero().flatten().tolist()
        assert changed == [s2]
    assert len(set(found["S2"].tolist())) > 1 and len(set(found["IO"].tolist())) > 2


def test_from_task_carries_the_names(smol_tokenizer) -> None:
    task = make_ioi(smol_tokenizer, 8, seed=1, corruption="swap")
    pairs = from_task(task, smol_tokenizer)
    assert list(pairs.positions) == ["IO", "S1", "S2", "S2+1"]
    assert pairs.position_names() == ["last", "IO", "S1", "S2", "S2+1"]
