"""The feature database: one streaming build over a corpus, storage (SQLite or PostgreSQL),
search, and what the web UI reads. See docs/features.md (the schema and :func:`open_db`'s API
are the contract with the autointerp writers and the server).
"""

from mechscope.features.db import (
    EXAMPLE_KINDS,
    Example,
    FeatureDB,
    FeatureNotFound,
    create_db,
    open_db,
)
from mechscope.features.schema import FORMAT, SCHEMA_VERSION

__all__ = [
    "EXAMPLE_KINDS",
    "FORMAT",
    "SCHEMA_VERSION",
    "Example",
    "FeatureDB",
    "FeatureNotFound",
    "create_db",
    "open_db",
]
