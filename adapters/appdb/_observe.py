"""Change detection on the app's contacts: a change table when triggers are installed, else
the updated-at column with an overlap, with a periodic full scan that finds deletions.

The resume token (JSON text, see ``Token``) is the adapter's own; the engine stores it with
each page's events and hands it back. Rules, also in docs/appdb.md:

* **Full scans.** The first run (no token), a run whose token came from the other mode, and in
  column mode any run when ``full_scan_interval_seconds`` have passed since the last scan read
  every row in key order. Their pages carry ``full_scan=True``: together, the pages of one run
  are the complete listing, so a contact the engine knows and the scan did not list is gone.
  Soft-deleted rows are listed as ``ContactRecord(deleted=True)``.
* **Triggers.** Pages follow the change table in commit order; a deleted row appears as
  ``ContactRecord(deleted=True)`` with the email it had. Changes ccsync itself wrote are
  skipped (the change row's ``writer`` is ``ccsync``). On PostgreSQL only changes of
  transactions older than every running one are read, so a slow transaction is waited for,
  never skipped. Rows up to the token handed back are pruned from the change table.
* **Column.** Rows with ``updated_at >= last bound - overlap`` and ``<= bound``, in
  (updated_at, key) order. ccsync's own writes leave updated_at alone (unless the app's own
  trigger moves it), so they are not read back as changes.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import Any, Final, Literal

import msgspec

from adapters.appdb._driver import Driver, Row, as_text, parse_time, quote
from adapters.appdb._rows import ContactRows
from adapters.appdb.config import AppDbConfig
from engine.errors import ConfigError
from engine.model import ContactRecord, normalise_email
from engine.ports import Page, Rejected

__all__ = ["Observer", "Token"]

_MAX_SEQ: Final = 1 << 62
_enc: Final = msgspec.json.Encoder(enc_hook=str)


class Token(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The resume token: where the next page starts."""

    mode: Literal["changes", "column", "scan"]
    xid: int = 0  # changes: last consumed (transaction id, seq); xid is 0 on SQLite
    seq: int = 0
    since: str | None = None  # column: the bound of the last completed run
    after_ts: str | None = None  # column: keyset cursor inside a run
    after_key: str | None = None  # column / scan: keyset cursor inside a run
    last_scan: str | None = None  # column: bound of the run that last did a full scan
    then: str | None = None  # scan: the token to go on with once the scan is complete


_dec: Final = msgspec.json.Decoder(Token)


def _encode(tok: Token) -> str:
    return _enc.encode(tok).decode()


class Observer:
    """Pages of changed contacts for one AppDatabase."""

    def __init__(self, cfg: AppDbConfig, driver: Driver, rows: ContactRows, triggers: bool):
        self._cfg = cfg
        self._d = driver
        self._rows = rows
        self.mode: Literal["changes", "column"] = "changes" if triggers else "column"
        self._changes = quote(cfg.change_table)

    async def observe(self, resume: str | None, bound: datetime) -> AsyncIterator[Page]:
        """See module docstring."""
        tok: Token | None = None
        if resume:
            try:
                tok = _dec.decode(resume)
            except msgspec.DecodeError as exc:
                raise ConfigError("appdb resume token", f"not one of ours: {exc}") from None
        dups = await self._rows.duplicates()
        if tok is not None and tok.mode == "scan":
            async for page in self._scan(tok, dups):
                yield page
            return
        if tok is None or tok.mode != self.mode or self._scan_due(tok, bound):
            then = await self._steady_after_scan(bound)
            async for page in self._scan(Token(mode="scan", then=_encode(then)), dups):
                yield page
            return
        if self.mode == "changes":
            async for page in self._changes_pages(tok, dups):
                yield page
        else:
            async for page in self._column_pages(tok, bound, dups):
                yield page

    def _scan_due(self, tok: Token, bound: datetime) -> bool:
        if self.mode != "column":
            return False
        last = parse_time(tok.last_scan)
        interval = timedelta(seconds=self._cfg.full_scan_interval_seconds)
        return last is None or bound - last >= interval

    async def _steady_after_scan(self, bound: datetime) -> Token:
        if self.mode == "column":
            return Token(mode="column", since=bound.isoformat(), last_scan=bound.isoformat())
        if self._d.dialect == "postgres":
            # Everything committed by transactions older than the oldest running one is in the
            # scan; later transactions' changes are read from the change table afterwards.
            (xmin,) = (
                await self._d.fetch("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
            )[0]
            return Token(mode="changes", xid=int(xmin) - 1, seq=_MAX_SEQ)
        (high,) = (await self._d.fetch(f"SELECT coalesce(max(seq), 0) FROM {self._changes}"))[0]
        return Token(mode="changes", seq=int(high))

    # --- full scan ------------------------------------------------------------------------

    async def _scan(self, tok: Token, dups: dict[str, list[str]]) -> AsyncIterator[Page]:
        c = self._cfg.contacts
        key = f"c.{quote(c.key)}"
        after = tok.after_key
        first = True
        while True:
            rejected: list[Rejected] = []
            if first and after is None:
                nulls = await self._d.fetch(f"{self._rows.select} WHERE {key} IS NULL LIMIT 100")
                _, rejected = self._rows.convert(nulls, {})
            first = False
            if after is None:
                sql = f"{self._rows.select} WHERE {key} IS NOT NULL ORDER BY {key} LIMIT ?"
                params: list[Any] = [self._cfg.page_size]
            else:
                sql = f"{self._rows.select} WHERE {key} > ? ORDER BY {key} LIMIT ?"
                params = [self._d.key_param(c.table, c.key, after), self._cfg.page_size]
            rows = await self._d.fetch(sql, params)
            records, bad = self._rows.convert(rows, dups)
            done = len(rows) < self._cfg.page_size
            request = f"appdb scan {c.table} key>{after or ''} limit {self._cfg.page_size}"
            if rows:
                after = as_text(rows[-1][0])
            next_tok = (
                tok.then
                if done and tok.then
                else _encode(Token(mode="scan", after_key=after, then=tok.then))
            )
            yield _page(request, records, [*rejected, *bad], rows, next_tok, full_scan=True)
            if done:
                return

    # --- change table ---------------------------------------------------------------------

    async def _changes_pages(self, tok: Token, dups: dict[str, list[str]]) -> AsyncIterator[Page]:
        pg = self._d.dialect == "postgres"
        # The engine handed this token back, so it has stored everything up to it: prune.
        if pg:
            await self._d.execute(
                f"DELETE FROM {self._changes} WHERE (txid, seq) <= (?, ?)", (tok.xid, tok.seq)
            )
            (limit,) = (
                await self._d.fetch("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
            )[0]
        else:
            await self._d.execute(f"DELETE FROM {self._changes} WHERE seq <= ?", (tok.seq,))
            (limit,) = (await self._d.fetch(f"SELECT coalesce(max(seq), 0) FROM {self._changes}"))[
                0
            ]
        xid, seq = tok.xid, tok.seq
        n = self._cfg.page_size
        while True:
            if pg:
                changes = await self._d.fetch(
                    f"SELECT txid, seq, key, op, email, writer FROM {self._changes} "
                    "WHERE (txid, seq) > (?, ?) AND txid < ? ORDER BY txid, seq LIMIT ?",
                    (xid, seq, int(limit), n),
                )
            else:
                changes = await self._d.fetch(
                    f"SELECT 0, seq, key, op, email, writer FROM {self._changes} "
                    "WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                    (seq, int(limit), n),
                )
            if changes:
                xid, seq = int(changes[-1][0]), int(changes[-1][1])
            records, rejected, rows = await self._rows_for(changes, dups)
            request = (
                f"appdb changes {self._cfg.change_table} after=({tok.xid},{tok.seq}) limit {n}"
            )
            resume = _encode(Token(mode="changes", xid=xid, seq=seq))
            yield _page(request, records, rejected, [*changes, *rows], resume, full_scan=False)
            if len(changes) < n:
                return
            tok = Token(mode="changes", xid=xid, seq=seq)

    async def _rows_for(
        self, changes: Sequence[Row], dups: dict[str, list[str]]
    ) -> tuple[list[ContactRecord], list[Rejected], list[Row]]:
        c = self._cfg.contacts
        by_key: dict[str, tuple[str, str | None]] = {}  # key -> (last op, email at that op)
        app_keys: set[str] = set()
        rejected: list[Rejected] = []
        for _xid, _seq, key, op, email, writer in changes:
            if key is None:
                raw = _enc.encode({"op": op, "email": email}).decode()
                rejected.append(
                    Rejected(record="(null key)", field=c.key, problem="key is NULL", raw=raw)
                )
                continue
            k = as_text(key) or ""
            by_key.pop(k, None)  # keep the order of last change
            by_key[k] = (str(op), email if op == "D" else by_key.get(k, ("", None))[1] or email)
            if writer != "ccsync":
                app_keys.add(k)
        keys = [k for k in by_key if k in app_keys]
        if not keys:
            return [], rejected, []
        cond, params = self._d.key_in(c.table, c.key, keys)
        rows = await self._d.fetch(f"{self._rows.select} WHERE c.{cond}", params)
        records, bad = self._rows.convert(rows, dups)
        seen = {as_text(r[0]) for r in rows}
        for k in keys:
            if k not in seen:
                email = by_key[k][1]
                records.append(
                    ContactRecord(store_id=k, email=normalise_email(email or ""), deleted=True)
                )
        return records, [*rejected, *bad], rows

    # --- updated-at column ----------------------------------------------------------------

    async def _column_pages(
        self, tok: Token, bound: datetime, dups: dict[str, list[str]]
    ) -> AsyncIterator[Page]:
        c = self._cfg.contacts
        if c.updated_at is None:
            raise ConfigError("appdb.contacts.updated_at", "needed without triggers")
        since = parse_time(tok.since)
        start = since - timedelta(seconds=self._cfg.overlap_seconds) if since else None
        u, k = f"c.{quote(c.updated_at)}", f"c.{quote(c.key)}"
        after_ts, after_key = tok.after_ts, tok.after_key
        n = self._cfg.page_size
        while True:
            conds = [f"{u} <= ?"]
            params: list[Any] = [self._d.time_param(bound)]
            if after_ts is not None and after_key is not None:
                conds.append(f"({u}, {k}) > (?, ?)")
                ts: Any = after_ts
                if self._d.dialect == "postgres":
                    ts = parse_time(after_ts)
                params += [ts, self._d.key_param(c.table, c.key, after_key)]
            elif start is not None:
                conds.append(f"{u} >= ?")
                params.append(self._d.time_param(start))
            sql = f"{self._rows.select} WHERE {' AND '.join(conds)} ORDER BY {u}, {k} LIMIT ?"
            rows = await self._d.fetch(sql, [*params, n])
            records, rejected = self._rows.convert(rows, dups)
            done = len(rows) < n
            request = f"appdb column {c.table}.{c.updated_at} from={after_ts or start} limit {n}"
            if rows:
                # The raw text on SQLite: its timestamps compare as text, in the app's format.
                after_ts = as_text(rows[-1][self._rows.updated_index])
                after_key = as_text(rows[-1][0])
            if done:
                nxt = Token(mode="column", since=bound.isoformat(), last_scan=tok.last_scan)
            else:
                nxt = Token(
                    mode="column",
                    since=tok.since,
                    after_ts=after_ts,
                    after_key=after_key,
                    last_scan=tok.last_scan,
                )
            yield _page(request, records, rejected, rows, _encode(nxt), full_scan=False)
            if done:
                return


def _page(
    request: str,
    records: Sequence[ContactRecord],
    rejected: Sequence[Rejected],
    rows: Sequence[Row],
    resume: str,
    *,
    full_scan: bool,
) -> Page:
    digest = hashlib.sha256(_enc.encode(rows)).hexdigest()
    return Page(
        request=request,
        contacts=tuple(records),
        rejected=tuple(rejected),
        content_hash=digest,
        resume=resume,
        full_scan=full_scan,
    )
