"""Fixtures of the feature-database tests (defined in features_helpers, shared with tests/server)."""

from features_helpers import built, db_url, fx, pg_server, tiny  # noqa: F401
