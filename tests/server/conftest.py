"""Fixtures of the web-server tests: the feature tests' tiny model, corpus and built database."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "features"))

from features_helpers import built, fx, tiny  # noqa: E402, F401
from server_helpers import served_db  # noqa: E402, F401
