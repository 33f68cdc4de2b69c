"""The event log's SQLite schema and the canonical row bytes the hash chain covers."""

from __future__ import annotations

import hashlib
from typing import Final

import msgspec

__all__ = ["FORMAT", "GENESIS", "ROW_COLUMNS", "SCHEMA", "row_hash"]

GENESIS: Final = b"\x00" * 32
# The on-disk format (log_meta.format). A build refuses a log of another format rather than
# misreading it.
FORMAT: Final = "1"
# The columns a read needs, in the order the log selects them (all but the hash).
ROW_COLUMNS: Final = (
    "position, event_id, stream, version, type, schema_version, recorded_at, payload"
)

# One stored-row shape (pyeventsourcing's recorder contract): a gapless global position,
# a producer-given id that makes appends idempotent, and UNIQUE(stream, version).
# recorded_at is kept monotonic by the single writer, so time-range reads bisect on position
# instead of paying for another index on every append.
SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS events (
    position       INTEGER PRIMARY KEY,
    event_id       TEXT    NOT NULL UNIQUE,
    stream         TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    type           TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    recorded_at    TEXT    NOT NULL,
    payload        BLOB    NOT NULL,
    hash           BLOB    NOT NULL,
    UNIQUE (stream, version)
);
CREATE TRIGGER IF NOT EXISTS events_append_only_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'ccsync: the event log is append-only; UPDATE refused'); END;
CREATE TRIGGER IF NOT EXISTS events_append_only_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'ccsync: the event log is append-only; DELETE refused'); END;
CREATE TABLE IF NOT EXISTS checkpoints (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    position   INTEGER NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS log_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

_head_encoder: Final = msgspec.json.Encoder()


def row_hash(
    prev: bytes,
    position: int,
    event_id: str,
    stream: str,
    version: int,
    type_: str,
    schema_version: int,
    recorded_at: str,
    payload: bytes,
) -> bytes:
    """sha256(previous hash + canonical bytes of this row).

    The canonical bytes are a JSON array of the envelope followed by a newline and the payload,
    so that any change to any column, or moving a row to another position, breaks the chain.
    """
    h = hashlib.sha256(prev)
    h.update(
        _head_encoder.encode(
            (position, event_id, stream, version, type_, schema_version, recorded_at)
        )
    )
    h.update(b"\n")
    h.update(payload)
    return h.digest()
