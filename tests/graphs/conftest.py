"""Fixtures of the graph tests: the feature tests' saved tiny Llama and corpus (``fx``, ``tiny``;
session-scoped, shared with tests/features and tests/server) for the feature-database hover."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "features"))

from features_helpers import fx, tiny  # noqa: E402, F401
