"""The integrated application's own SQL database (SQLite, PostgreSQL) as a store of the engine.

See docs/appdb.md for the mapping reference and the change-detection and echo rules.
"""

from __future__ import annotations

from adapters.appdb.config import AppDbConfig
from adapters.appdb.database import AppDatabase, open_appdb
from adapters.appdb.sample import (
    SAMPLE_SCHEMA_POSTGRES,
    SAMPLE_SCHEMA_SQLITE,
    create_sample_app,
    sample_config,
    sample_config_toml,
)

__all__ = [
    "SAMPLE_SCHEMA_POSTGRES",
    "SAMPLE_SCHEMA_SQLITE",
    "AppDatabase",
    "AppDbConfig",
    "create_sample_app",
    "open_appdb",
    "sample_config",
    "sample_config_toml",
]
