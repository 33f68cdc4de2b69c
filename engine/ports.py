"""Ports: what the engine needs from the outside world, as structural Protocols.

Adapters implement these without importing anything from here but the model types; the
engine never imports an adapter outside bootstrap and the CLI.

Observation is paged and resumable: a source yields ``Page``s, each carrying an opaque
``resume`` token (JSON text the adapter alone understands). The engine stores the token as the
store's checkpoint in the same transaction as the page's events; handing it back continues
after that page. A token is bounded by the run's ``bound``: no checkpoint moves past it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol, TypeAlias

import msgspec

from engine.commands import Command, Outcome
from engine.model import ContactRecord, ListRecord, Store, TrackingActivity

__all__ = [
    "Clock",
    "CommandSink",
    "ContactSource",
    "ListSource",
    "Page",
    "Rejected",
    "TrackingPage",
    "TrackingSource",
    "utc_now",
]

# The time of a sync: the engine bounds its cycles with it, and an adapter stamps its writes
# with the same one, so that the next cycle's observation reads them back between two bounds.
Clock: TypeAlias = Callable[[], datetime]


def utc_now() -> datetime:
    """The machine's time (the clock of every sync but simulated ones)."""
    return datetime.now(UTC)


class Rejected(msgspec.Struct, frozen=True, kw_only=True):
    """An observed record that could not be normalised: kept verbatim for the log."""

    record: str  # the store's id for it (or its email, or its row number)
    field: str
    problem: str
    raw: str  # JSON text of the record as observed


class Page(msgspec.Struct, frozen=True, kw_only=True):
    """One page of contacts as one request returned them."""

    request: str  # method, path and query as sent (never a token)
    contacts: tuple[ContactRecord, ...]
    rejected: tuple[Rejected, ...] = ()
    content_hash: str  # sha256 hex of the raw response body (or of the rows read)
    resume: str  # checkpoint token to persist with this page's events
    # True when this page's records are a complete, authoritative listing for their scope
    # (e.g. a full fetch), as opposed to "changed since"; lets the engine find deletions.
    full_scan: bool = False


class TrackingPage(msgspec.Struct, frozen=True, kw_only=True):
    """One page of tracking activities."""

    request: str
    activities: tuple[TrackingActivity, ...]
    rejected: tuple[Rejected, ...] = ()
    content_hash: str
    resume: str


class ContactSource(Protocol):
    """A store whose contacts can be observed incrementally."""

    @property
    def store(self) -> Store: ...

    def observe_contacts(self, resume: str | None, bound: datetime) -> AsyncIterator[Page]:
        """Pages of contacts changed since ``resume`` (everything if None), up to ``bound``."""
        ...


class ListSource(Protocol):
    """A store whose lists can be read (in full: Constant Contact has no date filter for them)."""

    async def observe_lists(self) -> tuple[str, Sequence[ListRecord]]:
        """(request description, every list)."""
        ...


class TrackingSource(Protocol):
    """A store that reports campaign tracking activity."""

    def observe_tracking(
        self, resume: str | None, bound: datetime
    ) -> AsyncIterator[TrackingPage]: ...


class CommandSink(Protocol):
    """A store that applies commands and reports an outcome for each."""

    @property
    def store(self) -> Store: ...

    async def apply(self, commands: Sequence[Command]) -> list[Outcome]:
        """Apply commands (in batches where the store allows); one Outcome per command, in order."""
        ...
