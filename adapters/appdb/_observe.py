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
  ``ContactRecord(deleted=True)`` with the email it had. Changes ccsync itself wrote are read
  too (their change row's ``writer`` is ``ccsync``). On PostgreSQL only changes of
  transactions older than every running one are read, so a slow transaction is waited for,
  never skipped. Rows up to the token handed back are pruned from the change table.
* **Column.** Rows with ``updated_at >= last bound - overlap`` and ``<= bound``, in
  (updated_at, key) order. ccsync's writes move updated_at (adapters.appdb._apply), so they
  are read back: that is how the engine sees the app's new state.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Sequence
from datetime import datetime, timedelta
from typing import Any, Final, Literal

import msgspec

from adapters.appdb._driver import Driver, Row, as_text, parse_time, quote
from adapters.appdb._paging import ReadAhead, make_page
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
        # Shared emails: a full scan checks the whole table once (it reads every row anyway);
        # an incremental run checks the rows it reads, through the email index, unless it
        # reads most of the table (``_probe_rows``); without the index, the whole table once
        # per run as well. See adapters.appdb._rows.
        if tok is not None and tok.mode == "scan":
            async for page in self._scan(tok, await self._rows.duplicates()):
                yield page
            return
        if tok is None or tok.mode != self.mode or self._scan_due(tok, bound):
            then = await self._steady_after_scan(bound)
            dups = await self._rows.duplicates()
            async for page in self._scan(Token(mode="scan", then=_encode(then)), dups):
                yield page
            return
        probed = await self._probe_rows(tok, bound)
        dups = {} if probed else await self._rows.duplicates()
        if self.mode == "changes":
            async for page in self._changes_pages(tok, dups, probed):
                yield page
        else:
            async for page in self._column_pages(tok, bound, dups, probed):
                yield page

    async def _probe_rows(self, tok: Token, bound: datetime) -> bool:
        """Whether this incremental run checks shared emails row by row, through the index
        (else: one whole-table check)."""
        c = self._cfg.contacts
        if not self._rows.email_indexed:
            return False
        if self._d.dialect != "postgres" or (self.mode == "column" and c.updated_at is None):
            return True  # SQLite: a probe costs less than the GROUP BY costs per table row
        # PostgreSQL: a probe costs about twice the GROUP BY's share of one row, so a run
        # reading more than half the table checks the whole table instead. Counting stops at
        # half the table's estimated size (never analysed: probe).
        rows = await self._d.fetch(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(?)", (quote(c.table),)
        )
        half = int(rows[0][0]) // 2 if rows else -1
        if half <= 0:
            return True
        params: list[Any]
        if self.mode == "changes":
            window = f"SELECT 1 FROM {self._changes} WHERE (txid, seq) > (?, ?) LIMIT ?"
            params = [tok.xid, tok.seq]
        else:
            assert c.updated_at is not None
            u = quote(c.updated_at)
            window = f"SELECT 1 FROM {quote(c.table)} WHERE {u} <= ?"
            params = [self._d.time_param(bound)]
            since = parse_time(tok.since)
            if since is not None:
                window += f" AND {u} >= ?"
                start = since - timedelta(seconds=self._cfg.overlap_seconds)
                params.append(self._d.time_param(start))
            window += " LIMIT ?"
        (count,) = (
            await self._d.fetch(f"SELECT count(*) FROM ({window}) AS w", [*params, half + 1])
        )[0]
        return int(count) <= half

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
        n = self._cfg.page_size
        rejected: list[Rejected] = []
        if tok.after_key is None:
            nulls = await self._d.fetch(f"{self._rows.select} WHERE {key} IS NULL LIMIT 100")
            _, rejected = self._rows.convert(nulls, {})

        def query(after: str | None) -> Awaitable[list[Row]]:
            if after is None:
                sql = f"{self._rows.select} WHERE {key} IS NOT NULL ORDER BY {key} LIMIT ?"
                return self._d.fetch(sql, [n])
            sql = f"{self._rows.select} WHERE {key} > ? ORDER BY {key} LIMIT ?"
            return self._d.fetch(sql, [self._d.key_param(c.table, c.key, after), n])

        after = tok.after_key
        async with ReadAhead(query(after)) as ahead:
            while True:
                rows = await ahead.take()
                done = len(rows) < n
                request = f"appdb scan {c.table} key>{after or ''} limit {n}"
                if rows:
                    after = as_text(rows[-1][0])
                if not done:
                    await ahead.start(query(after))
                records, bad = self._rows.convert(rows, dups)
                next_tok = (
                    tok.then
                    if done and tok.then
                    else _encode(Token(mode="scan", after_key=after, then=tok.then))
                )
                yield make_page(request, records, [*rejected, *bad], rows, next_tok, full_scan=True)
                rejected = []
                if done:
                    return

    # --- change table ---------------------------------------------------------------------

    async def _changes_pages(
        self, tok: Token, dups: dict[str, list[str]], probed: bool
    ) -> AsyncIterator[Page]:
        c = self._cfg.contacts
        pg = self._d.dialect == "postgres"
        select_list = self._rows.probed_list if probed else self._rows.select_list
        # The engine handed this token back, so it has stored everything up to it: prune.
        if pg:
            await self._d.execute(
                f"DELETE FROM {self._changes} WHERE (txid, seq) <= (?, ?)", (tok.xid, tok.seq)
            )
            sql = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
        else:
            await self._d.execute(f"DELETE FROM {self._changes} WHERE seq <= ?", (tok.seq,))
            sql = f"SELECT coalesce(max(seq), 0) FROM {self._changes}"
        limit = int((await self._d.fetch(sql))[0][0])
        # One query a page: every change, each joined to the row as it is now (no row: deleted).
        # ccsync's own writes are read back too: the engine's projection of the app must show
        # what the app holds, and observing a write is how the engine confirms it. There is no
        # echo to fear: the reconciler compares states, and a value it wrote agrees with its
        # source. The change row's ``writer`` still tells the two apart for anyone auditing.
        n = self._cfg.page_size
        on = f"ON c.{quote(c.key)} = {self._d.cast_key(c.table, c.key, 'ch.key')}"
        if pg:
            # The page's change rows first (LIMIT inside, as a literal), then the join: the
            # planner sees n rows whatever it knows of the change table, which is never
            # analysed when autovacuum is off. Joined first, a change table of 1,000,000
            # unanalysed rows was planned as a parallel Gather Merge: two workers launched
            # for every page, 20-30 ms a page against 7.5 ms for this plan (EXPLAIN ANALYZE).
            page = (
                f"SELECT txid, seq, key, op, email FROM {self._changes} "
                f"WHERE (txid, seq) > (?, ?) AND txid < ? ORDER BY txid, seq LIMIT {int(n)}"
            )
            sql = (
                f"SELECT ch.txid, ch.seq, ch.key, ch.op, ch.email, {select_list} "
                f"FROM ({page}) AS ch LEFT JOIN {quote(c.table)} AS c {on} "
                "ORDER BY ch.txid, ch.seq"
            )
        else:
            sql = (
                f"SELECT 0, ch.seq, ch.key, ch.op, ch.email, {select_list} "
                f"FROM {self._changes} AS ch LEFT JOIN {quote(c.table)} AS c {on} "
                f"WHERE ch.seq > ? AND ch.seq <= ? ORDER BY ch.seq LIMIT {int(n)}"
            )

        def query(xid: int, seq: int) -> Awaitable[list[Row]]:
            return self._d.fetch(sql, (xid, seq, limit) if pg else (seq, limit))

        xid, seq = tok.xid, tok.seq
        async with ReadAhead(query(xid, seq)) as ahead:
            while True:
                rows = await ahead.take()
                done = len(rows) < n
                request = f"appdb changes {self._cfg.change_table} after=({xid},{seq}) limit {n}"
                if rows:
                    xid, seq = int(rows[-1][0]), int(rows[-1][1])
                if done:
                    # Everything up to the run's limit is read (ccsync's own changes included).
                    xid, seq = (limit - 1, _MAX_SEQ) if pg else (0, limit)
                else:
                    await ahead.start(query(xid, seq))
                records, rejected = self._changed(rows, dups, probed)
                resume = _encode(Token(mode="changes", xid=xid, seq=seq))
                yield make_page(request, records, rejected, rows, resume, full_scan=False)
                if done:
                    return

    def _changed(
        self, rows: Sequence[Row], dups: dict[str, list[str]], probed: bool
    ) -> tuple[list[ContactRecord], list[Rejected]]:
        c = self._cfg.contacts
        latest: dict[str, Row] = {}  # key -> its last change in the page, with the row
        rejected: list[Rejected] = []
        for row in rows:
            key = row[2]
            if key is None:
                raw = _enc.encode({"op": row[3], "email": row[4]}).decode()
                rejected.append(
                    Rejected(record="(null key)", field=c.key, problem="key is NULL", raw=raw)
                )
                continue
            k = key if type(key) is str else str(key)
            latest.pop(k, None)  # keep the order of last change
            latest[k] = row
        present = [r[5:] for r in latest.values() if r[5] is not None]
        records, bad = self._rows.convert(present, dups, probed=probed)
        for k, r in latest.items():
            if r[5] is None:
                email = normalise_email(r[4] or "")
                records.append(ContactRecord(store_id=k, email=email, deleted=True))
        return records, [*rejected, *bad]

    # --- updated-at column ----------------------------------------------------------------

    async def _column_pages(
        self, tok: Token, bound: datetime, dups: dict[str, list[str]], probed: bool
    ) -> AsyncIterator[Page]:
        c = self._cfg.contacts
        if c.updated_at is None:
            raise ConfigError("appdb.contacts.updated_at", "needed without triggers")
        since = parse_time(tok.since)
        start = since - timedelta(seconds=self._cfg.overlap_seconds) if since else None
        u, k = f"c.{quote(c.updated_at)}", f"c.{quote(c.key)}"
        n = self._cfg.page_size
        pg = self._d.dialect == "postgres"
        select = self._rows.probed_select if probed else self._rows.select

        def query(after_ts: str | None, after_key: str | None) -> Awaitable[list[Row]]:
            conds = [f"{u} <= ?"]
            params: list[Any] = [self._d.time_param(bound)]
            if after_ts is not None and after_key is not None:
                conds.append(f"({u}, {k}) > (?, ?)")
                # SQLite compares its text timestamps as text, in the app's own format.
                ts: Any = parse_time(after_ts) if pg else after_ts
                params += [ts, self._d.key_param(c.table, c.key, after_key)]
            elif start is not None:
                conds.append(f"{u} >= ?")
                params.append(self._d.time_param(start))
            sql = f"{select} WHERE {' AND '.join(conds)} ORDER BY {u}, {k} LIMIT ?"
            return self._d.fetch(sql, [*params, n])

        after_ts, after_key = tok.after_ts, tok.after_key
        async with ReadAhead(query(after_ts, after_key)) as ahead:
            while True:
                rows = await ahead.take()
                done = len(rows) < n
                request = (
                    f"appdb column {c.table}.{c.updated_at} from={after_ts or start} limit {n}"
                )
                if rows:
                    after_ts = as_text(rows[-1][self._rows.updated_index])
                    after_key = as_text(rows[-1][0])
                if not done:
                    await ahead.start(query(after_ts, after_key))
                records, rejected = self._rows.convert(rows, dups, probed=probed)
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
                yield make_page(request, records, rejected, rows, _encode(nxt), full_scan=False)
                if done:
                    return
