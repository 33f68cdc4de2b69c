"""The event log's reads: position ranges, streams, recorded-time ranges (engine.log's mixin).

Every read goes through ``_fetch`` (which the log implements: on a writer it never sees
another task's uncommitted append) and never skips a row: a missing position or an
undecodable row raises LogCorruptError after the rows before it were delivered.
"""

from __future__ import annotations

import operator
from bisect import bisect_right
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from datetime import datetime
from itertools import accumulate, count
from typing import Any, Final

import msgspec

from engine._logschema import ROW_COLUMNS
from engine._logtypes import Head, Recorded, TimeParser, format_ts, parse_ts
from engine.codec import CURRENT_TYPES, EVENT_DECODER, decode_event
from engine.errors import LogCorruptError

__all__ = ["LogReads", "lookups", "only_commands"]

# What to decode in place of an event's payload, given its position, type and payload
_Narrow = Callable[[int, str, bytes], bytes]
_MAX_VARS: Final = 900  # under SQLite's oldest host-parameter limit (999)
_json: Final = msgspec.json.Encoder()
_AT: Final = (
    f"SELECT {ROW_COLUMNS} FROM events "
    "WHERE position IN (SELECT value FROM json_each(?)) ORDER BY position"
)
_OF_STREAMS: Final = f"SELECT {ROW_COLUMNS} FROM events WHERE stream IN ({{}})"


def lookups(sql: str, values: Sequence[str]) -> list[tuple[str, Sequence[Any]]]:
    """The reads of ``sql`` (``... IN ({})``) for ``values``: all of them as one JSON
    parameter through json_each, except those holding a NUL character, which SQLite's JSON
    functions cut short: those go as plain parameters (an app's key may hold any text)."""
    plain = [v for v in values if "\x00" not in v]
    odd = [v for v in values if "\x00" in v]
    reads: list[tuple[str, Sequence[Any]]] = [
        (sql.format("SELECT value FROM json_each(?)"), (_json.encode(plain),))
    ]
    for i in range(0, len(odd), _MAX_VARS):
        chunk = odd[i : i + _MAX_VARS]
        reads.append((sql.format(",".join("?" * len(chunk))), chunk))
    return reads


_READ_RANGE: Final = (
    f"SELECT {ROW_COLUMNS} FROM events WHERE position >= ? AND position < ? "
    "ORDER BY position LIMIT ?"
)


class LogReads:
    """Read methods of EventLog, written against ``_fetch`` and ``head``."""

    READ_CHUNK: Final = 500  # rows per fetch: a chunk that stays in the CPU cache decodes faster

    async def _fetch(self, sql: str, params: Sequence[object]) -> list[Any]:
        raise NotImplementedError

    async def head(self) -> Head:
        """The newest committed row."""
        raise NotImplementedError

    async def read(
        self, start: int = 1, stop: int | None = None, *, chunk: int | None = None
    ) -> AsyncIterator[Recorded]:
        """Events with ``start <= position < stop`` in order, in bounded memory.

        Raises LogCorruptError on a missing position or an undecodable row: reading never
        skips anything silently.
        """
        size = chunk or self.READ_CHUNK
        pos = max(start, 1)
        upper = stop if stop is not None else 2**62
        types, decode = CURRENT_TYPES, EVENT_DECODER.decode
        last_ts, at = "", datetime.min
        while pos < upper:
            rows = await self._fetch(_READ_RANGE, (pos, upper, size))
            if not rows:
                return
            gap = None
            if rows[0][0] != pos or rows[-1][0] != pos + len(rows) - 1:
                rows, gap = _before_gap(rows, pos)
            # The hot loop of every replay, so decode_event's common case is inlined (about
            # 15% faster); one at a time, as each event is garbage once folded, is faster than
            # building the chunk's list (the cyclic GC never walks a chunk of live objects).
            for p, eid, s, v, tag, sv, ts, payload in rows:
                cls = types.get(tag)
                if cls is not None and sv == cls.schema_version:
                    try:
                        event = decode(payload)
                    except msgspec.DecodeError:
                        event = decode_event(tag, sv, payload, position=p)  # raises the why
                    if type(event) is not cls:
                        event = decode_event(tag, sv, payload, position=p)  # raises the why
                else:
                    event = decode_event(tag, sv, payload, position=p)
                if ts != last_ts:
                    last_ts, at = ts, parse_ts(ts)
                yield Recorded(p, eid, s, v, at, event)
            if gap:
                raise gap
            pos += len(rows)

    async def read_batches(
        self, start: int = 1, stop: int | None = None, *, chunk: int | None = None
    ) -> AsyncIterator[list[Recorded]]:
        """``read`` in lists of up to ``chunk`` events: the fast path for replay and projections."""
        size = chunk or self.READ_CHUNK
        pos = max(start, 1)
        upper = stop if stop is not None else 2**62
        when = TimeParser()
        while pos < upper:
            rows = await self._fetch(_READ_RANGE, (pos, upper, size))
            if not rows:
                return
            gap = None
            if rows[0][0] != pos or rows[-1][0] != pos + len(rows) - 1:
                rows, gap = _before_gap(rows, pos)
            if rows:
                yield [
                    Recorded(p, eid, s, v, when(ts), decode_event(tag, sv, payload, position=p))
                    for p, eid, s, v, tag, sv, ts, payload in rows
                ]
            if gap:
                raise gap
            pos += len(rows)

    async def read_stream(self, stream: str) -> list[Recorded]:
        """Every event of one stream, in version order."""
        rows = await self._fetch(
            f"SELECT {ROW_COLUMNS} FROM events WHERE stream = ? ORDER BY version", (stream,)
        )
        return _decoded(rows)

    async def read_streams(self, streams: Collection[str]) -> list[Recorded]:
        """Every event of these streams, in log order (a query, not one per stream)."""
        rows = []
        for sql, params in lookups(_OF_STREAMS, sorted(set(streams))):
            rows += await self._fetch(sql, params)
        return _decoded(sorted(rows, key=lambda r: int(r[0])))

    async def read_at(self, positions: Collection[int]) -> list[Recorded]:
        """The events at ``positions``, in log order, in one query; raises LogCorruptError if
        one of them is missing."""
        return await self._read_at(positions, None)

    async def read_commands(self, at: Mapping[int, Collection[str]]) -> list[Recorded]:
        """``read_at`` for the positions of ``at``, each batch of commands there cut down to
        the commands ``at`` names for it before it is decoded (``only_commands``): decoding
        thousands to read a few cost a reader more than everything else it did."""
        return await self._read_at(at, lambda p, t, payload: only_commands(t, payload, at[p]))

    async def _read_at(self, positions: Collection[int], narrow: _Narrow | None) -> list[Recorded]:
        wanted = sorted(set(positions))
        rows = await self._fetch(_AT, (_json.encode(wanted),)) if wanted else []
        if len(rows) != len(wanted):
            missing = sorted(set(wanted) - {int(r[0]) for r in rows})
            raise LogCorruptError(f"the log has no event at position {missing[0]}")
        if narrow is not None:
            rows = [(*r[:7], narrow(r[0], r[4], r[7])) for r in rows]
        return _decoded(rows)

    async def position_at(self, when: datetime) -> int:
        """The first position recorded at or after ``when`` (head + 1 if none).

        recorded_at is monotonic in position, so this is a bisection on the primary key.
        """
        target = format_ts(when)
        lo, hi = 1, (await self.head()).position + 1
        while lo < hi:
            mid = (lo + hi) // 2
            rows = await self._fetch("SELECT recorded_at FROM events WHERE position = ?", (mid,))
            if not rows:
                raise LogCorruptError(f"gap in the log: position {mid} is missing")
            if rows[0][0] < target:
                lo = mid + 1
            else:
                hi = mid
        return lo

    async def read_time(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> AsyncIterator[Recorded]:
        """Events recorded in ``[since, until)`` (timezone-aware times)."""
        start = await self.position_at(since) if since else 1
        stop = await self.position_at(until) if until else None
        async for r in self.read(start, stop):
            yield r


def _decoded(rows: list[Any]) -> list[Recorded]:
    when = TimeParser()
    return [
        Recorded(p, eid, s, v, when(ts), decode_event(tag, sv, payload, position=p))
        for p, eid, s, v, tag, sv, ts, payload in rows
    ]


def _before_gap(rows: list[Any], start: int) -> tuple[list[Any], LogCorruptError]:
    """The rows before the first missing position, and the error to raise after them."""
    expect = start
    for i, row in enumerate(rows):
        if row[0] != expect:
            return rows[:i], LogCorruptError(
                f"gap in the log: expected position {expect}, found {row[0]}"
            )
        expect += 1
    raise AssertionError("called without a gap")  # pragma: no cover


# A batch event's list of commands, by type: items that name their command_id, or the ids
_BATCH_ITEMS: Final = {
    "command.issued": "commands",
    "command.applied": "applied",
    "command.confirmed": "command_ids",
}
_raw_fields: Final = msgspec.json.Decoder(dict[str, msgspec.Raw])
_raw_items: Final = msgspec.json.Decoder(list[msgspec.Raw])
_an_id: Final = msgspec.json.Decoder(str)
_raw_json: Final = msgspec.json.Encoder()


class _Ref(msgspec.Struct):
    command_id: str


_a_ref: Final = msgspec.json.Decoder(_Ref)


def only_commands(type_: str, payload: bytes, wanted: Collection[str]) -> bytes:
    """A batch event's payload holding only the ``wanted`` commands (anything else as it is).
    The items are split as raw JSON and only the ids of those holding a wanted id's text are
    read; what is kept is decoded by the event's own decoder afterwards, so nothing about the
    event's shape is assumed here."""
    field = _BATCH_ITEMS.get(type_)
    if field is None:
        return payload
    top = _raw_fields.decode(payload)
    if field not in top:
        return payload  # an older event: one command, whole
    keep = set(wanted)
    pick = _an_id.decode if field == "command_ids" else lambda r: _a_ref.decode(r).command_id
    listed = bytes(top[field])
    items = _raw_items.decode(listed)
    top[field] = msgspec.Raw(
        _raw_json.encode(
            [items[i] for i in _holding(listed, items, keep) if pick(items[i]) in keep]
        )
    )
    return _raw_json.encode(top)


def _holding(listed: bytes, items: list[msgspec.Raw], ids: Collection[str]) -> list[int]:
    """The items of the JSON array ``listed`` whose text holds one of ``ids`` (as a JSON
    string). Decoding every item's id, thousands a batch, took most of a history's time; a
    byte search finds the few. Where the array is not compact, every item."""
    ends = list(map(operator.add, accumulate(map(len, items)), count(1)))  # each ',' or ']'
    if not ends or ends[-1] != len(listed) - 1:
        return list(range(len(items)))
    found = set()
    for needle in (_raw_json.encode(i) for i in ids):
        at = listed.find(needle)
        while at >= 0:
            found.add(bisect_right(ends, at))
            at = listed.find(needle, at + 1)
    return sorted(found)
