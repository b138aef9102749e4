"""One store backend for tests whose subject is the pipeline, not the store: a worker,
a broker and a browser are slow, and the store logic they go through is tested on both
backends elsewhere. PostgreSQL is the production store; a sandbox's store is SQLite."""

from __future__ import annotations

import pytest

ON_POSTGRESQL = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
ON_SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
