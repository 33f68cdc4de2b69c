"""Rate limits per application key (client_id): requests per second and a daily quota.

The daily counter resets at 00:00 UTC of the simulator clock, so a test can spend the quota,
advance the clock past midnight and go on. All accounts of one key share the limits.
"""

from __future__ import annotations

from collections import deque
from typing import Final, Literal

__all__ = ["DAY_MS", "QuotaState", "RateLimiter"]

DAY_MS: Final = 24 * 3600 * 1000

Verdict = Literal["ok", "throttled", "quota_exceeded"]


class QuotaState:
    """One key's usage: the recent request times and today's count."""

    __slots__ = ("day", "recent", "used")

    def __init__(self) -> None:
        self.recent: deque[int] = deque()
        self.day = -1
        self.used = 0


class RateLimiter:
    """A sliding one-second window plus a per-UTC-day counter, per client_id."""

    def __init__(self, per_second: int, daily_quota: int) -> None:
        self.per_second = per_second
        self.daily_quota = daily_quota
        self._keys: dict[str, QuotaState] = {}

    def check(self, key: str, now_ms: int) -> Verdict:
        """Count one request at ``now_ms``, or say why it is refused (refusals don't count)."""
        st = self._keys.setdefault(key, QuotaState())
        day = now_ms // DAY_MS
        if day != st.day:
            st.day = day
            st.used = 0
        if st.used >= self.daily_quota:
            return "quota_exceeded"
        recent = st.recent
        while recent and recent[0] <= now_ms - 1000:
            recent.popleft()
        if len(recent) >= self.per_second:
            return "throttled"
        recent.append(now_ms)
        st.used += 1
        return "ok"

    def usage(self, key: str, now_ms: int) -> dict[str, int]:
        """Today's usage of a key: used, limit, remaining, resets_at (ms)."""
        st = self._keys.get(key)
        day = now_ms // DAY_MS
        used = st.used if st is not None and st.day == day else 0
        return {
            "used": used,
            "limit": self.daily_quota,
            "remaining": max(self.daily_quota - used, 0),
            "resets_at_ms": (day + 1) * DAY_MS,
        }
