"""Fixtures of the anomaly tests: the tiny backdoor world of tiny_world.py, built once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tiny_world import World


@pytest.fixture(scope="session")
def world() -> World:
    return World()


@pytest.fixture(scope="session")
def detectors(world: World) -> dict[str, Any]:
    """Detectors of every kind but sae, on the backdoored and on the clean model."""
    kinds = ("mahalanobis", "lof", "attribution", "lens", "dla", "perplexity", "entropy")
    return {"bad": world.fit(world.bad, kinds=kinds), "clean": world.fit(world.clean, kinds=kinds)}


@pytest.fixture(scope="session")
def model_folder(world: World, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The backdoored tiny model saved as a folder the CLI can load."""
    folder = tmp_path_factory.mktemp("anomaly-model")
    world.bad.hf.save_pretrained(folder)
    world.tokenizer.save_pretrained(folder)
    return folder
