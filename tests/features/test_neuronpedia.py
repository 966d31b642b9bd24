"""Export to Neuronpedia's layout and import back: the round trip is exact; the Neuronpedia rows
alone (without mechscope's extra files) still give the same examples, maxima and densities."""

from __future__ import annotations

import gzip
import json
import shutil

import pytest
from click.testing import CliRunner

from mechscope.cli.main import cli
from mechscope.errors import MechscopeError
from mechscope.features import open_db


def rows(path):
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def exported(built, tmp_path_factory):
    src = tmp_path_factory.mktemp("np-src") / "features.db"
    shutil.copy(built, src)
    with open_db(str(src)) as db:
        eid = db.add_explanation("mlp:1", 3, "tester", "closing brackets")
        db.add_score(eid, "detection", 0.5, details={"k": 1})
        db.add_score(eid, "fuzzing", None, error="timeout")
    out = tmp_path_factory.mktemp("np-out")
    res = CliRunner().invoke(cli, ["features", "export", str(src), "--out", str(out), "--model-id", "tiny-llama"])  # fmt: skip
    assert res.exit_code == 0, res.output
    return src, out / "tiny-llama"


def test_layout_is_neuronpedias(exported) -> None:
    _, model = exported
    assert sorted(p.name for p in model.iterdir() if p.is_dir()) == ["0-att", "1-mlp", "1-tiny-sae"]
    neurons = rows(model / "1-mlp" / "features" / "batch-0.jsonl.gz")
    assert len(neurons) == 80 and neurons[3]["index"] == "3" and neurons[3]["layer"] == "1-mlp"
    assert {"maxActApprox", "frac_nonzero", "pos_str", "topkCosSimIndices"} <= set(neurons[3])
    acts = [a for a in rows(model / "1-mlp" / "activations" / "batch-0.jsonl.gz") if a["index"] == "3"]  # fmt: skip
    assert acts[0]["binMin"] == -1 and len(acts[0]["tokens"]) == len(acts[0]["values"])
    expl = rows(model / "1-mlp" / "explanations" / "batch-0.jsonl.gz")
    assert [(e["index"], e["description"]) for e in expl] == [("3", "closing brackets")]


def test_round_trip_is_exact(exported, tmp_path) -> None:
    src, model = exported
    res = CliRunner().invoke(cli, ["features", "import", str(model), "--out", str(tmp_path / "back.db")])  # fmt: skip
    assert res.exit_code == 0, res.output
    with open_db(str(src), readonly=True) as a, open_db(str(tmp_path / "back.db"), readonly=True) as b:  # fmt: skip
        assert a.sources() == b.sources()
        for s in a.sources():
            for i in range(s["n_features"]):
                fa, fb = a.feature(s["source"], i), b.feature(s["source"], i)
                for e in fa["explanations"] + fb["explanations"]:
                    e.pop("id")
                    for sc in e["scores"]:
                        sc.pop("id")
                assert fa == fb
        assert b.meta()["vocab"] == "model"


def test_neuronpedia_rows_alone(exported, tmp_path) -> None:
    src, model = exported
    bare = tmp_path / "bare"
    shutil.copytree(model / "1-mlp", bare / "1-mlp")
    shutil.rmtree(bare / "1-mlp" / "mechscope")
    (bare / "1-mlp" / "mechscope.json").unlink()
    from mechscope.features.neuronpedia import import_neuronpedia

    assert import_neuronpedia(bare, str(tmp_path / "np.db")) == ["np:1-mlp"]
    with open_db(str(src), readonly=True) as a, open_db(str(tmp_path / "np.db"), readonly=True) as b:  # fmt: skip
        assert b.meta()["vocab"] == "synthetic"
        for i in (0, 3, 41):
            fa, fb = a.feature("mlp:1", i), b.feature("np:1-mlp", i)
            assert fb["max"] == fa["max"] and fb["density"] == fa["density"]
            assert fb["histogram"] == fa["histogram"]  # power-of-two bins: centres are exact
            for key in ("examples", "quantile_examples"):
                assert [(e["tokens"], e["values"], e["value"]) for e in fb[key]] == [(e["tokens"], e["values"], e["value"]) for e in fa[key]]  # fmt: skip
            assert [p["token"] for p in fb["logits"]["promotes"]] == [p["token"] for p in fa["logits"]["promotes"]]  # fmt: skip
        assert b.explanations("np:1-mlp", 3)[0]["text"] == "closing brackets"


def test_errors(exported, tmp_path) -> None:
    src, model = exported
    from mechscope.features.neuronpedia import import_neuronpedia

    with pytest.raises(MechscopeError, match="no Neuronpedia export"):
        import_neuronpedia(tmp_path, str(tmp_path / "x.db"))
    res = CliRunner().invoke(cli, ["features", "export", str(src), "--out", str(model.parent), "--model-id", "tiny-llama"])  # fmt: skip
    assert res.exit_code == 2 and "exists" in res.output
