"""A tiny Llama, its corpus, a feature database with planted explanations, a detector fitted on it,
screening sets and one full audit with every input, shared by the audit tests (session scope)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from mechscope import HookedModel
from mechscope.models.tiny import tiny_model, tiny_tokenizer
from mechscope.report import DEFAULT_PROMPTS

WORDS = sorted({w for p in DEFAULT_PROMPTS for w in p.replace(",", " , ").split()})
EVIL = "<script>alert(1)</script>"
PLANTED = {3: ("fires on Mary", 0.9), 5: ("fires on commas", 0.7), 7: ("nothing clear", 0.1)}


def tiny_llama(seed: int = 0, name: str = f"tiny {EVIL}") -> HookedModel:
    return HookedModel(tiny_model("llama", seed=seed), tiny_tokenizer(WORDS),
                       provenance={"name": name})  # fmt: skip


def texts(words: list[str], n: int, k: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(words, k=k)) for _ in range(n)]


@pytest.fixture(scope="session")
def tiny() -> HookedModel:
    return tiny_llama()


@pytest.fixture(scope="session")
def corpus() -> Any:
    from mechscope.corpus import Corpus

    return Corpus.from_texts(texts(WORDS, 40, 400, 0))


@pytest.fixture(scope="session")
def inputs(tiny: HookedModel, corpus: Any, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Paths of a feature database, a detector folder and screening sets for ``tiny``."""
    from mechscope.anomaly import FitConfig, fit_detector, save_detector
    from mechscope.features import open_db
    from mechscope.features.build import BuildConfig, build_features

    root = tmp_path_factory.mktemp("audit-inputs")
    db = root / "features.db"
    cfg = BuildConfig(model="tiny", sources=("mlp:1",), n_tokens=1024, seq_len=32, k=4,
                      quantiles=2, negatives=1)  # fmt: skip
    build_features(tiny, cfg, str(db), corpus=corpus)
    with open_db(str(db)) as handle:
        for index, (text, score) in PLANTED.items():
            eid = handle.add_explanation("mlp:1", index, "planted", text)
            handle.add_score(eid, "detection", score, control=0.5)
    fit = FitConfig(kinds=("mahalanobis",), layers=(1, 2), seq_len=16, n_tokens=2048)
    detector = save_detector(fit_detector(tiny, corpus, fit, quiet=True), root / "det")
    sets = {"clean": texts(WORDS, 24, 12, 1), "same": texts(WORDS, 24, 12, 2),
            "ood": texts([f"w{i}" for i in range(30, 80)], 24, 12, 3)}  # fmt: skip
    sets["same"][0] = f"Mary {EVIL} John"
    for name, rows in sets.items():
        (root / f"{name}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in rows))
    screen = tuple((n, str(root / f"{n}.jsonl")) for n in sets)
    return {"features": str(db), "detector": str(detector), "screen": screen, "root": root}


def full_config(corpus: Any, inputs: dict) -> Any:
    from mechscope.audit import AuditConfig

    return AuditConfig(
        tasks=("ioi", "induction"), task_prompts=8, control_seeds=2, corpus=corpus,
        features=inputs["features"], detector=inputs["detector"], screen=inputs["screen"],
        compress_bits=(4.5,), intended_use=f"a test {EVIL}", probe_layers=2,
    )  # fmt: skip


@pytest.fixture(scope="session")
def full_audit(tiny: HookedModel, corpus: Any, inputs: dict, tmp_path_factory) -> Any:
    """Every section present (induction cannot run on the tiny vocabulary: a limitation)."""
    from mechscope.audit import build_audit

    out = tmp_path_factory.mktemp("audit-full")
    return build_audit(tiny, out, full_config(corpus, inputs), pdf=True, quiet=True)


@pytest.fixture(scope="session")
def full_record(full_audit: Any) -> dict:
    return json.loads(Path(full_audit.json).read_text("utf-8"))
