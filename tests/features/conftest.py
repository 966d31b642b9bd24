"""Fixtures of the feature-database tests (defined in features_helpers, shared with tests/server)."""

from features_helpers import built, fx, tiny  # noqa: F401
