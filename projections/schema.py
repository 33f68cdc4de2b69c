"""Projection tables: one set for all stores, keyed by store. They live in the log's file (so a
projection's output and its checkpoint commit together) or, for a rebuild, in a file of their own.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Final

__all__ = ["CHECKPOINT", "PROJECTION_SCHEMA", "TABLES", "UNSETTLED", "VERSION", "statements"]

CHECKPOINT: Final = "projections"
# The layout of the tables below. A file whose projections have another layout has them
# dropped and rebuilt from the log at start (they are a fold of the log: nothing is lost).
# 6: every event of a contact moves its projected modified time; 7: p_commands.superseded_by,
# pairs from the outcome of a create (command.applied), and p_decisions_email; 8: p_created,
# an applied tracking record is 'delivered' (settled), not 'applied'; p_links_position; no
# p_commands.command (a failed tracking record's body is read from its issue record); 9: no
# p_commands_status, p_commands_email is (email, status); 10: p_command_sends
VERSION: Final = "10"
# A command not yet settled (confirmed or superseded; a tracking record, delivered): few at any
# time, whatever the size of the log. The partial index below is defined with this very text,
# which queries that name the index must repeat.
UNSETTLED: Final = "status IN ('issued', 'failed', 'applied')"

# The big, hot tables (contacts, commands, tracking) are rowid tables: rows are stored in the
# order they are first written, which for a sync is the order they are projected, so a batch
# writes a few neighbouring pages; their random keys (store ids, command ids) live only in a
# narrow unique index. Keyed by those ids (WITHOUT ROWID), every batch of a large sync dirtied
# pages all over a table many times the page cache, and commits spent seconds rewriting them.
PROJECTION_SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS p_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS p_contacts (
    store    TEXT NOT NULL,
    store_id TEXT NOT NULL,
    email    TEXT NOT NULL,
    position INTEGER NOT NULL,
    state    BLOB NOT NULL,
    UNIQUE (store, store_id)
);
CREATE INDEX IF NOT EXISTS p_contacts_email ON p_contacts (email);
CREATE INDEX IF NOT EXISTS p_contacts_position ON p_contacts (position);
CREATE TABLE IF NOT EXISTS p_lists (
    store    TEXT NOT NULL,
    store_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    state    BLOB NOT NULL,
    PRIMARY KEY (store, store_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS p_permissions (
    position    INTEGER PRIMARY KEY,
    store       TEXT NOT NULL,
    store_id    TEXT NOT NULL,
    email       TEXT NOT NULL,
    old_status  TEXT,
    new_status  TEXT NOT NULL,
    source      TEXT,
    reason      TEXT,
    source_time TEXT,
    campaign_activity_id TEXT,
    recorded_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS p_permissions_email ON p_permissions (email);
CREATE TABLE IF NOT EXISTS p_tracking (
    store       TEXT NOT NULL,
    contact_id  TEXT NOT NULL,
    campaign_activity_id TEXT NOT NULL,
    kind        TEXT NOT NULL,
    created_time TEXT NOT NULL,
    email       TEXT NOT NULL,
    position    INTEGER NOT NULL,
    activity    BLOB NOT NULL,
    UNIQUE (store, contact_id, campaign_activity_id, kind, created_time)
);
CREATE INDEX IF NOT EXISTS p_tracking_position ON p_tracking (position);
CREATE INDEX IF NOT EXISTS p_tracking_email ON p_tracking (email, kind);
CREATE TABLE IF NOT EXISTS p_links (
    ctct_id  TEXT PRIMARY KEY,
    app_id   TEXT NOT NULL UNIQUE,
    email    TEXT NOT NULL,
    position INTEGER NOT NULL
) WITHOUT ROWID;
-- The pairs made since a position: the tracking held for want of an app contact goes out then.
CREATE INDEX IF NOT EXISTS p_links_position ON p_links (position);
-- Contacts ccsync created in a store that did not say their id (Constant Contact's bulk
-- import): made from ``source_id``, a contact of the other store, under ``email``. A listing
-- that shows a new contact under that address pairs the two (engine.pairs), even if the one it
-- was made from has changed its address since.
CREATE TABLE IF NOT EXISTS p_created (
    store     TEXT NOT NULL,
    email     TEXT NOT NULL,
    source_id TEXT NOT NULL,
    position  INTEGER NOT NULL,
    PRIMARY KEY (store, email)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS p_created_source ON p_created (store, source_id);
CREATE TABLE IF NOT EXISTS p_commands (
    command_id  TEXT NOT NULL UNIQUE,
    target      TEXT NOT NULL,
    kind        TEXT NOT NULL,
    email       TEXT NOT NULL,
    status      TEXT NOT NULL,
    attempts    INTEGER NOT NULL,
    issued_position INTEGER NOT NULL,
    issued_at   TEXT NOT NULL,
    outcome_position INTEGER,
    outcome_at  TEXT,
    error       TEXT,
    retriable   INTEGER,
    confirmed_at TEXT,
    confirmed_position INTEGER,
    superseded_by TEXT  -- the command that asks again for what this one asked (not shown)
);
-- A contact's commands (its history), and its unsettled ones (the outbox, for each contact a
-- cycle touches): with the status in the key, a contact's settled history is skipped in the
-- index instead of read row by row. (No index of the status alone: the open commands are in
-- p_commands_open, and counting every status is a scan of this one.)
CREATE INDEX IF NOT EXISTS p_commands_email ON p_commands (email, status);
-- The commands not yet settled, in the order they were issued: what the cycle's orphan sweep
-- walks, so that it costs what is open, not every command ever issued (and, keyed by position,
-- each batch of commands lands at the end of the index rather than all over it).
CREATE INDEX IF NOT EXISTS p_commands_open ON p_commands (issued_position)
    WHERE {UNSETTLED};
-- The earlier sends of a command sent again (the store did not show it, or it failed): a
-- command's row keeps its last issue and outcome; a person's history shows every one. Filled by
-- the trigger, so a command sent once (almost all) costs nothing here.
CREATE TABLE IF NOT EXISTS p_command_sends (
    command_id  TEXT NOT NULL,
    issued_position INTEGER NOT NULL,
    outcome_position INTEGER,
    PRIMARY KEY (command_id, issued_position)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS p_commands_sent_again
BEFORE UPDATE OF issued_position ON p_commands
WHEN new.issued_position <> old.issued_position
BEGIN
    INSERT OR IGNORE INTO p_command_sends (command_id, issued_position, outcome_position)
    VALUES (old.command_id, old.issued_position, old.outcome_position);
END;
CREATE TABLE IF NOT EXISTS p_decisions (
    position INTEGER PRIMARY KEY,
    store_key TEXT NOT NULL,
    email    TEXT NOT NULL,
    action   TEXT NOT NULL,
    reason   TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);
-- A contact's history and `audit blocked --email` read one address's decisions.
CREATE INDEX IF NOT EXISTS p_decisions_email ON p_decisions (email);
CREATE TABLE IF NOT EXISTS p_rejected (
    position INTEGER PRIMARY KEY,
    store    TEXT NOT NULL,
    record   TEXT NOT NULL,
    field    TEXT NOT NULL,
    problem  TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS p_runs (
    run_id      TEXT PRIMARY KEY,
    mode        TEXT NOT NULL,
    bound       TEXT NOT NULL,
    started_position INTEGER NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    outcome     TEXT,
    counts      BLOB,
    error       TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS p_runs_started ON p_runs (started_position);
-- (`ccsync status` and /metrics sum the API requests of the runs started today.)
CREATE INDEX IF NOT EXISTS p_runs_started_at ON p_runs (started_at);
CREATE TABLE IF NOT EXISTS p_checkpoint (
    name     TEXT PRIMARY KEY,
    position INTEGER NOT NULL
);
"""

# Tables compared by `ccsync replay --check`, with their key order.
TABLES: Final = {
    "p_contacts": "store, store_id",
    "p_lists": "store, store_id",
    "p_permissions": "position",
    "p_tracking": "store, contact_id, campaign_activity_id, kind, created_time",
    "p_links": "ctct_id",
    "p_created": "store, email",
    "p_commands": "command_id",
    "p_command_sends": "command_id, issued_position",
    "p_decisions": "position",
    "p_rejected": "position",
    "p_runs": "run_id",
}


def statements(script: str) -> Iterator[str]:
    """The statements of ``script`` one by one (a trigger's body holds semicolons of its own),
    for a caller that must not use executescript(), which commits the open transaction."""
    text = ""
    for piece in script.split(";"):
        text += piece + ";"
        if sqlite3.complete_statement(text):
            if text.strip(" \n;"):
                yield text
            text = ""
