"""DDL for the change table and the triggers that fill it (SQLite and PostgreSQL).

The change table holds one row per change to a mapped contact column or a membership row:
``(seq, key, op, email, writer)`` (PostgreSQL adds ``txid``, the writing transaction, so the
reader can wait for slow transactions instead of skipping them). ``op`` is I/U/D for the
contacts table and M for memberships; ``email`` is the address the row had (for D: before it
went). ``writer`` is ``ccsync`` for rows ccsync wrote, ``app`` for everything else:

* PostgreSQL: ccsync's write transactions set the transaction-local ``ccsync.writer``.
* SQLite: ccsync's write transactions hold one row in ``<change_table>_writer`` while they
  run. SQLite has one writer at a time and the row never commits, so no other connection ever
  sees it.

Triggers fire only on the mapped columns (``UPDATE OF``): the app changing a column ccsync does
not map makes no change row.
"""

from __future__ import annotations

from adapters.appdb._driver import quote
from adapters.appdb.config import AppDbConfig

__all__ = ["install_sql", "uninstall_sql", "watched_columns"]


def watched_columns(cfg: AppDbConfig) -> list[str]:
    """The contacts columns whose updates are changes (everything mapped but updated-at)."""
    c = cfg.contacts
    cols = [c.key, c.email, *c.fields.values()]
    if c.deleted:
        cols.append(c.deleted)
    p = c.permission
    if p is not None:
        cols += [x for x in (p.column, p.reason_column, p.source_column, p.changed_at_column) if x]
    return list(dict.fromkeys(cols))


def _name(cfg: AppDbConfig, table: str, suffix: str) -> str:
    return f"{cfg.change_table}_{table.replace('.', '_')}_{suffix}"


def install_sql(cfg: AppDbConfig, dialect: str, schema: str | None = None) -> str:
    """A script creating the change table and the triggers (idempotent)."""
    if dialect == "postgres":
        return _pg_install(cfg, schema or "public")
    return _sqlite_install(cfg)


def uninstall_sql(cfg: AppDbConfig, dialect: str, schema: str | None = None) -> str:
    """A script dropping what ``install_sql`` created (idempotent)."""
    c, m = cfg.contacts, cfg.memberships
    tables = [c.table] + ([m.table] if m else [])
    if dialect == "postgres":
        s = quote(schema or "public")
        out = []
        for t in tables:
            out.append(f"DROP TRIGGER IF EXISTS {quote(_name(cfg, t, 'trg'))} ON {quote(t)};")
            out.append(f"DROP FUNCTION IF EXISTS {s}.{quote(_name(cfg, t, 'fn'))}();")
        out.append(f"DROP TABLE IF EXISTS {s}.{quote(cfg.change_table)};")
        return "\n".join(out)
    out = [
        f"DROP TRIGGER IF EXISTS {quote(_name(cfg, t, op))};"
        for t in tables
        for op in ("ins", "upd", "del")
    ]
    out.append(f"DROP TABLE IF EXISTS {quote(cfg.change_table)};")
    out.append(f"DROP TABLE IF EXISTS {quote(cfg.change_table + '_writer')};")
    return "\n".join(out)


def _sqlite_install(cfg: AppDbConfig) -> str:
    ch, wr = quote(cfg.change_table), quote(cfg.change_table + "_writer")
    who = f"coalesce((SELECT writer FROM {wr} LIMIT 1), 'app')"
    c = cfg.contacts
    k, e = quote(c.key), quote(c.email)
    ins = f"INSERT INTO {ch} (key, op, email, writer)"
    watched = ", ".join(quote(col) for col in watched_columns(cfg))
    parts = [
        f"""CREATE TABLE IF NOT EXISTS {ch} (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key,  -- the app's key, in its own type (no affinity)
    op TEXT NOT NULL,
    email TEXT,
    writer TEXT NOT NULL,
    changed_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now'))
);""",
        f"CREATE TABLE IF NOT EXISTS {wr} (writer TEXT NOT NULL);",
        f"""CREATE TRIGGER IF NOT EXISTS {quote(_name(cfg, c.table, "ins"))}
AFTER INSERT ON {quote(c.table)} BEGIN
    {ins} VALUES (NEW.{k}, 'I', NEW.{e}, {who});
END;""",
        f"""CREATE TRIGGER IF NOT EXISTS {quote(_name(cfg, c.table, "upd"))}
AFTER UPDATE OF {watched} ON {quote(c.table)} BEGIN
    {ins} SELECT OLD.{k}, 'D', OLD.{e}, {who} WHERE OLD.{k} IS NOT NEW.{k};
    {ins} VALUES (NEW.{k}, 'U', NEW.{e}, {who});
END;""",
        f"""CREATE TRIGGER IF NOT EXISTS {quote(_name(cfg, c.table, "del"))}
AFTER DELETE ON {quote(c.table)} BEGIN
    {ins} VALUES (OLD.{k}, 'D', OLD.{e}, {who});
END;""",
    ]
    m = cfg.memberships
    if m is not None:
        mc = quote(m.contact)
        parts += [
            f"""CREATE TRIGGER IF NOT EXISTS {quote(_name(cfg, m.table, "ins"))}
AFTER INSERT ON {quote(m.table)} BEGIN
    {ins} VALUES (NEW.{mc}, 'M', NULL, {who});
END;""",
            f"""CREATE TRIGGER IF NOT EXISTS {quote(_name(cfg, m.table, "upd"))}
AFTER UPDATE ON {quote(m.table)} BEGIN
    {ins} SELECT OLD.{mc}, 'M', NULL, {who} WHERE OLD.{mc} IS NOT NEW.{mc};
    {ins} VALUES (NEW.{mc}, 'M', NULL, {who});
END;""",
            f"""CREATE TRIGGER IF NOT EXISTS {quote(_name(cfg, m.table, "del"))}
AFTER DELETE ON {quote(m.table)} BEGIN
    {ins} VALUES (OLD.{mc}, 'M', NULL, {who});
END;""",
        ]
    return "\n".join(parts)


def _pg_install(cfg: AppDbConfig, schema: str) -> str:
    s = quote(schema)
    ch = f"{s}.{quote(cfg.change_table)}"
    c = cfg.contacts
    k, e = quote(c.key), quote(c.email)
    ins = f"INSERT INTO {ch} (key, op, email, writer)"
    who = "coalesce(nullif(current_setting('ccsync.writer', true), ''), 'app')"
    watched = ", ".join(quote(col) for col in watched_columns(cfg))
    fn = f"{s}.{quote(_name(cfg, c.table, 'fn'))}"
    parts = [
        f"""CREATE TABLE IF NOT EXISTS {ch} (
    seq bigserial PRIMARY KEY,
    txid bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    key text,
    op char(1) NOT NULL,
    email text,
    writer text NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now()
);""",
        f"CREATE INDEX IF NOT EXISTS {quote(cfg.change_table + '_order')} ON {ch} (txid, seq);",
        f"""CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $ccsync$
DECLARE w text := {who};
BEGIN
    IF TG_OP = 'DELETE' THEN
        {ins} VALUES (OLD.{k}::text, 'D', OLD.{e}::text, w);
    ELSIF TG_OP = 'UPDATE' THEN
        IF OLD.{k} IS DISTINCT FROM NEW.{k} THEN
            {ins} VALUES (OLD.{k}::text, 'D', OLD.{e}::text, w);
        END IF;
        {ins} VALUES (NEW.{k}::text, 'U', NEW.{e}::text, w);
    ELSE
        {ins} VALUES (NEW.{k}::text, 'I', NEW.{e}::text, w);
    END IF;
    RETURN NULL;
END $ccsync$;""",
        f"DROP TRIGGER IF EXISTS {quote(_name(cfg, c.table, 'trg'))} ON {quote(c.table)};",
        f"""CREATE TRIGGER {quote(_name(cfg, c.table, "trg"))}
AFTER INSERT OR DELETE OR UPDATE OF {watched} ON {quote(c.table)}
FOR EACH ROW EXECUTE FUNCTION {fn}();""",
    ]
    m = cfg.memberships
    if m is not None:
        mc = quote(m.contact)
        mfn = f"{s}.{quote(_name(cfg, m.table, 'fn'))}"
        parts += [
            f"""CREATE OR REPLACE FUNCTION {mfn}() RETURNS trigger LANGUAGE plpgsql AS $ccsync$
DECLARE w text := {who};
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        {ins} VALUES (OLD.{mc}::text, 'M', NULL, w);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        {ins} VALUES (NEW.{mc}::text, 'M', NULL, w);
    END IF;
    RETURN NULL;
END $ccsync$;""",
            f"DROP TRIGGER IF EXISTS {quote(_name(cfg, m.table, 'trg'))} ON {quote(m.table)};",
            f"""CREATE TRIGGER {quote(_name(cfg, m.table, "trg"))}
AFTER INSERT OR UPDATE OR DELETE ON {quote(m.table)}
FOR EACH ROW EXECUTE FUNCTION {mfn}();""",
        ]
    return "\n".join(parts)
