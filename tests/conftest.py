"""Fixtures shared by several test files.

The SmolLM2 fixtures are session-scoped and built on first use, so tests that never ask for them
never pay the load (about 2 s each once the GGUF conversion is cached, about 20 s the first time).
``builtin_report`` runs ``mechscope report`` on the built-in model once per session, on the shared
``smollm2``, so every test reading the default report shares one run; ``report_tuned_lens`` trains
the report's tuned lens once per session (the lens test checks it) and saves it where the report's
cache looks, so the report loads it instead of training a second one. The report's SAE is cached in
~/.cache/mechscope under a key of its settings, trained on first use.

The suite runs on both cores with pytest-xdist (``pytest -n 2``, as the README and ``.ci/run``
do): each worker uses one torch thread, and every test that reads the session's report or its
tuned lens is put in one xdist group, so the lens is trained and the report built once, on one
worker, while the other worker runs the rest.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from mechscope import HookedModel
    from mechscope.lenses import TunedLens

REPORT_FIXTURES = frozenset({"builtin_report", "report_tuned_lens"})

if os.environ.get("PYTEST_XDIST_WORKER") and "OMP_NUM_THREADS" not in os.environ:
    import torch

    torch.set_num_threads(1)  # two workers on two cores: one thread each, no oversubscription


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups into the node ids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that share the session's report (or its tuned lens) run on one xdist worker."""
    for item in items:
        if REPORT_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.xdist_group("builtin-report"))


IOI_PROMPT = "When Mary and John went to the store, John gave a drink to"


@pytest.fixture(scope="session")
def ioi_prompt() -> str:
    """The indirect-object-identification prompt (14 SmolLM2 tokens, no BOS)."""
    return IOI_PROMPT


@pytest.fixture(scope="session")
def smollm2() -> HookedModel:
    """The built-in SmolLM2-135M-Instruct as a ``HookedModel`` (attn="sdpa")."""
    import mechscope

    return mechscope.load("smollm2-135m", progress=False)


@pytest.fixture(scope="session")
def smollm2_hf_copy() -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """``(hf_model, tokenizer)``: a second, bare SmolLM2 with its default (sdpa) attention.

    It is the reference for "hooked == bare HF" and the source of oracle copies. Treat it as
    read-only: ``HookedModel`` and TransformerLens's bridge both switch the attention
    implementation of the model they wrap, so hand them ``copy.deepcopy(hf_model)``.
    """
    from mechscope.models.loading import load_hf

    hf, tokenizer, _ = load_hf("smollm2-135m", progress=False)
    return hf, tokenizer


def share_builtin_model(patch: pytest.MonkeyPatch, model: HookedModel) -> None:
    """Make ``mechscope.load("smollm2-135m")`` (what the CLI calls) return the loaded ``model``."""
    import mechscope

    real = mechscope.load

    def load(name: Any, *args: Any, **kwargs: Any) -> Any:
        return model if name == mechscope.DEFAULT_MODEL else real(name, *args, **kwargs)

    patch.setattr(mechscope, "load", load)


@pytest.fixture
def cli_uses_smollm2(smollm2: HookedModel, monkeypatch: pytest.MonkeyPatch) -> HookedModel:
    """For CLI tests on the built-in model: the command gets the session's ``smollm2``."""
    share_builtin_model(monkeypatch, smollm2)
    return smollm2


@pytest.fixture(scope="session")
def builtin_report(
    smollm2: HookedModel, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Path:
    """``report.html`` of ``mechscope report --quiet`` with default settings, on the shared model.

    The command runs through the CLI (option parsing, model loading, config, output path); only
    ``mechscope.load("smollm2-135m")`` returns the session's ``smollm2`` (:func:`share_builtin_model`).
    """
    from click.testing import CliRunner

    from mechscope.cli.main import cli

    out = tmp_path_factory.mktemp("builtin-report")
    request.getfixturevalue("report_tuned_lens")  # the report then loads this session's lens
    with pytest.MonkeyPatch.context() as patch:
        share_builtin_model(patch, smollm2)
        result = CliRunner().invoke(cli, ["report", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.stderr
    return Path(result.stdout.strip())


@pytest.fixture(scope="session")
def report_tuned_lens(smollm2: HookedModel) -> TunedLens:
    """A tuned lens trained in this session with the report's budget (``TrainConfig()``), saved
    where :func:`mechscope.lenses.cached_tuned_lens` looks for the report's lens."""
    from mechscope.lenses import TrainConfig, train_tuned_lens
    from mechscope.lenses.cached import REPORT_TOKENS, tuned_lens_path

    out = tuned_lens_path(smollm2, REPORT_TOKENS)
    out.parent.mkdir(parents=True, exist_ok=True)
    return train_tuned_lens(smollm2, None, TrainConfig(), out=out, quiet=True)
