"""The simulator's own clock, and the timestamp formats of the API.

Timestamps are kept as integer milliseconds since the epoch (cheap to compare and store for a
million contacts) and rendered the way Constant Contact does: ``2016-01-23T13:48:44.108Z``.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache

__all__ = ["SimClock", "date_only", "iso_ms", "parse_iso_ms"]


class SimClock:
    """Wall time plus an offset that tests move with ``advance``; or frozen.

    Tokens expire, ``updated_at`` is stamped, rate windows and the quota day turn on this
    clock, so a test can cross 24 hours or midnight UTC without waiting.
    """

    def __init__(self, start: datetime | None = None, *, frozen: bool = False) -> None:
        base = start if start is not None else datetime.now(UTC)
        if base.tzinfo is None:
            base = base.replace(tzinfo=UTC)
        self._start_ms = int(base.timestamp() * 1000)
        self._mono0 = time.monotonic()
        self._offset_ms = 0
        self._frozen = frozen
        self._lock = threading.Lock()  # advance() may come from another thread

    def now_ms(self) -> int:
        """Milliseconds since the epoch on the simulator's clock."""
        elapsed = 0 if self._frozen else int((time.monotonic() - self._mono0) * 1000)
        return self._start_ms + elapsed + self._offset_ms

    def now(self) -> datetime:
        """The simulator's current time (UTC)."""
        return datetime.fromtimestamp(self.now_ms() / 1000, UTC)

    def advance(self, delta: timedelta | None = None, *, seconds: float = 0.0) -> None:
        """Move the clock forward by ``delta`` (and/or ``seconds``)."""
        total = (delta.total_seconds() if delta is not None else 0.0) + seconds
        if total < 0:
            raise ValueError("the simulator clock only moves forward")
        with self._lock:
            self._offset_ms += int(total * 1000)


@lru_cache(maxsize=8192)
def _day_prefix(days: int) -> str:
    return time.strftime("%Y-%m-%dT", time.gmtime(days * 86_400))


@lru_cache(maxsize=1)
def _time_parts() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Every ``HH:MM:SS.`` of a day and every ``mmmZ`` (built on first use, ~5 MB)."""
    clock = tuple(
        f"{h:02d}:{m:02d}:{s:02d}." for h in range(24) for m in range(60) for s in range(60)
    )
    return clock, tuple(f"{i:03d}Z" for i in range(1000))


def iso_ms(ms: int) -> str:
    """``2016-01-23T13:48:44.108Z`` for a millisecond timestamp.

    Hot path (a million contacts rendered at start-up, several timestamps each): the date
    part is memoised per day and the rest looked up in tables, about 2.5x faster than integer
    formatting on every call and 7x faster than strftime.
    """
    days, rem = divmod(ms, 86_400_000)
    secs, milli = divmod(rem, 1000)
    clock, millis = _time_parts()
    return _day_prefix(days) + clock[secs] + millis[milli]


def date_only(ms: int) -> str:
    """``2016-07-08``: the API renders ``deleted_at`` as a date without time."""
    return time.strftime("%Y-%m-%d", time.gmtime(ms // 1000))


def parse_iso_ms(text: str) -> int:
    """Parse an ISO-8601 date or date-time (``Z`` or offset; naive means UTC) to ms.

    Raises ValueError with the offending text.
    """
    raw = text.strip()
    try:
        if len(raw) == 10:
            d = date.fromisoformat(raw)
            ts = datetime(d.year, d.month, d.day, tzinfo=UTC)
        else:
            ts = datetime.fromisoformat(raw.replace(" ", "+"))
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO-8601 date-time") from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return int((ts - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(milliseconds=1))
