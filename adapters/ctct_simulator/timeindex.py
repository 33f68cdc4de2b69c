"""The account's indexes by time: which contacts have ``updated_at``, ``created_at`` or
``opt_out_date`` in a range, without looking at the others.

The real API answers ``updated_after`` from an index; a scan over a million contacts made the
simulator, not the client, the cost of an incremental sync. Each index is a sorted list of
integer keys ``ms << 32 | seq`` (unique per contact, ordered by time then creation), kept in
buckets so an insert or a removal moves at most a few thousand pointers.

Keys are kept current by the :class:`~adapters.ctct_simulator.contact.Contact` properties of
those three fields: assigning one moves the contact's key, whoever assigns it. A listing asks
for the candidates (in ``seq`` order) and still applies the whole filter to each, so the index
only has to never miss a contact, which the property guarantees.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable, Iterator
from typing import Final, Literal

__all__ = ["Field", "SortedKeys", "TimeIndex", "make_key"]

Field = Literal["updated", "created", "optout"]

_SEQ_BITS: Final = 32
_SEQ_MASK: Final = (1 << _SEQ_BITS) - 1
_LOAD: Final = 1024  # bucket size after a split or a build
_CACHED: Final = 4  # candidate lists kept (one incremental cycle asks for three)


def make_key(ms: int, seq: int) -> int:
    """The index key of a contact: ordered by time, then by ``seq``."""
    return (ms << _SEQ_BITS) | seq


class SortedKeys:
    """A sorted set of ints in buckets of about ``_LOAD`` (the idea of sortedcontainers'
    SortedList, reduced to what the index needs)."""

    def __init__(self, keys: Iterable[int] = ()) -> None:
        ordered = sorted(keys)
        self._buckets: list[list[int]] = [
            ordered[i : i + _LOAD] for i in range(0, len(ordered), _LOAD)
        ]
        self._maxes: list[int] = [b[-1] for b in self._buckets]
        self._len = len(ordered)

    def __len__(self) -> int:
        return self._len

    def add(self, key: int) -> None:
        """Insert ``key`` (not present)."""
        buckets, maxes = self._buckets, self._maxes
        self._len += 1
        if not buckets:
            buckets.append([key])
            maxes.append(key)
            return
        i = bisect_left(maxes, key)
        if i == len(maxes):
            i -= 1
            buckets[i].append(key)
            maxes[i] = key
        else:
            insort(buckets[i], key)
        bucket = buckets[i]
        if len(bucket) > 2 * _LOAD:
            buckets[i : i + 1] = [bucket[:_LOAD], bucket[_LOAD:]]
            maxes[i : i + 1] = [bucket[_LOAD - 1], bucket[-1]]

    def remove(self, key: int) -> None:
        """Remove ``key``; KeyError if it is not present (an index out of step with its
        contacts must fail loudly, not answer wrongly)."""
        buckets, maxes = self._buckets, self._maxes
        i = bisect_left(maxes, key)
        if i < len(maxes):
            bucket = buckets[i]
            j = bisect_left(bucket, key)
            if bucket[j] == key:
                del bucket[j]
                self._len -= 1
                if not bucket:
                    del buckets[i], maxes[i]
                elif j == len(bucket):
                    maxes[i] = bucket[-1]
                return
        raise KeyError(key)

    def _position(self, key: int) -> tuple[int, int]:
        """(bucket, offset) of the first key >= ``key``."""
        i = bisect_left(self._maxes, key)
        if i == len(self._maxes):
            return i, 0
        return i, bisect_left(self._buckets[i], key)

    def count(self, lo: int, hi: int) -> int:
        """How many keys k have lo <= k < hi."""
        if lo >= hi:
            return 0
        i, j = self._position(lo)
        i2, j2 = self._position(hi)
        if i == i2:
            return j2 - j
        return sum(map(len, self._buckets[i:i2])) - j + j2

    def between(self, lo: int, hi: int) -> Iterator[int]:
        """The keys k with lo <= k < hi, in order."""
        if lo >= hi:
            return
        i, j = self._position(lo)
        buckets = self._buckets
        while i < len(buckets):
            bucket = buckets[i]
            if bucket[-1] < hi:
                yield from bucket[j:]
            else:
                yield from bucket[j : bisect_left(bucket, hi, j)]
                return
            i, j = i + 1, 0

    def __iter__(self) -> Iterator[int]:
        for bucket in self._buckets:
            yield from bucket


def _range(after: int | None, before: int | None) -> tuple[int, int]:
    """Key bounds [lo, hi) for times strictly after ``after`` and strictly before ``before``."""
    lo = make_key(after + 1, 0) if after is not None else -(1 << 100)
    hi = make_key(before, 0) if before is not None else 1 << 100
    return lo, hi


class TimeIndex:
    """The three time indexes of one account, and the last candidate lists asked for.

    ``version`` moves on every key change, so a cached candidate list is reused only while
    no indexed time has changed (pages of one listing in a quiet account cost a bisection).
    """

    def __init__(self) -> None:
        # A listing uses the index when its candidates are at most 1/scan_share of the
        # account (collecting and sorting k candidates costs more per contact than testing
        # one in a scan). Tests set 0 to send every time-filtered listing through the index.
        self.scan_share = 8
        self.keys: dict[Field, SortedKeys] = {
            "updated": SortedKeys(),
            "created": SortedKeys(),
            "optout": SortedKeys(),
        }
        self.version = 0
        self._cache: dict[tuple[Field, int, int], tuple[int, list[int]]] = {}

    def build(self, updated: list[int], created: list[int], optout: list[int]) -> None:
        """Replace all three indexes with these keys (a seeded account, in one sort each)."""
        self.keys = {
            "updated": SortedKeys(updated),
            "created": SortedKeys(created),
            "optout": SortedKeys(optout),
        }
        self.version += 1

    def insert(self, field: Field, ms: int | None, seq: int) -> None:
        """Index a contact's time (None: the contact has no such time)."""
        if ms is not None:
            self.keys[field].add(make_key(ms, seq))
            self.version += 1

    def move(self, field: Field, seq: int, old: int | None, new: int | None) -> None:
        """A contact's time changed from ``old`` to ``new``."""
        if old == new:
            return
        keys = self.keys[field]
        if old is not None:
            keys.remove(make_key(old, seq))
        if new is not None:
            keys.add(make_key(new, seq))
        self.version += 1

    def count(self, field: Field, after: int | None, before: int | None) -> int:
        """How many contacts have this time strictly inside (after, before)."""
        return self.keys[field].count(*_range(after, before))

    def cached(self, field: Field, after: int | None, before: int | None) -> bool:
        """Whether :meth:`seqs` would answer from its cache."""
        hit = self._cache.get((field, *_range(after, before)))
        return hit is not None and hit[0] == self.version

    def seqs(self, field: Field, after: int | None, before: int | None) -> list[int]:
        """The ``seq`` of every contact with this time strictly inside (after, before),
        ascending (creation order, the order listings are served in)."""
        lo, hi = _range(after, before)
        hit = self._cache.get((field, lo, hi))
        if hit is not None and hit[0] == self.version:
            return hit[1]
        found = sorted([k & _SEQ_MASK for k in self.keys[field].between(lo, hi)])
        if len(self._cache) >= _CACHED:
            del self._cache[next(iter(self._cache))]
        self._cache[(field, lo, hi)] = (self.version, found)
        return found

    def forget(self) -> None:
        """Drop the cached candidate lists (a benchmark times the uncached answer)."""
        self._cache.clear()

    def entries(self, field: Field) -> list[tuple[int, int]]:
        """Every (time, seq) of one index, in key order (for consistency checks)."""
        return [(k >> _SEQ_BITS, k & _SEQ_MASK) for k in self.keys[field]]
