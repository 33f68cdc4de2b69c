"""The one error tree of ccsync.

Adapters translate library errors (aiohttp, sqlite3, asyncpg) into these at their boundary,
so the engine and the CLI only ever see this tree. The split follows what a caller should do:

* ``FatalError``       stop this run (or this account); a human must act. Exit non-zero.
* ``RetriableError``   the same call may succeed later (5xx, timeouts, throttling).
* ``SkippableRecordError`` one record is bad; report it by record and field, go on with the rest.
* ``ConcurrencyError`` an optimistic-concurrency check failed; re-read and decide again.
"""

from __future__ import annotations

__all__ = [
    "AuthorizationError",
    "CcsyncError",
    "ConcurrencyError",
    "ConfigError",
    "FatalError",
    "LogCorruptError",
    "LogLockedError",
    "QuotaExhaustedError",
    "RetriableError",
    "SkippableRecordError",
    "UnknownEventError",
]


class CcsyncError(Exception):
    """Base of every error ccsync raises on purpose."""


class FatalError(CcsyncError):
    """Stop: continuing would be unsafe or pointless until someone acts."""


class ConfigError(FatalError):
    """The configuration is broken; the message names the key and the problem."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"config: {key}: {problem}")


class AuthorizationError(FatalError):
    """Credentials are missing, expired beyond refresh, or revoked."""


class QuotaExhaustedError(FatalError):
    """The daily API quota is spent; calls resume after the given reset time (UTC)."""

    def __init__(self, message: str, resets_at: str) -> None:
        self.resets_at = resets_at
        super().__init__(f"{message} (resets at {resets_at})")


class LogLockedError(FatalError):
    """Another process holds the log for writing."""


class LogCorruptError(FatalError):
    """The log's contents cannot be trusted (bad hash, gap, undecodable row)."""


class UnknownEventError(LogCorruptError):
    """A stored row has an event tag or schema version this build does not know."""


class RetriableError(CcsyncError):
    """A transient failure: the same request may succeed when retried."""


class SkippableRecordError(CcsyncError):
    """One record is invalid. Names the record and the field; the run goes on without it."""

    def __init__(self, record: str, field: str, problem: str) -> None:
        self.record = record
        self.field = field
        self.problem = problem
        super().__init__(f"record {record}: field {field}: {problem}")


class ConcurrencyError(CcsyncError):
    """An append expected a stream version that is no longer current."""

    def __init__(self, stream: str, expected: int, actual: int) -> None:
        self.stream = stream
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"stream {stream!r}: expected version {expected}, but the log is at {actual}"
        )
