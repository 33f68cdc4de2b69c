"""Which contact page to ask for next, and the resume token after each page: a pure state machine.

A pass over Constant Contact is either a *full fetch* (first run: ``status=all``, every contact)
or an *incremental* pass of three sweeps, all looking back from the last checkpoint minus the
overlap: ``updated_after`` (profile changes), ``optout_after`` (unsubscribes, which do not move
the contact's ``updated_at``: pitfall 1) and ``status=deleted`` (hidden from the default
listing: pitfall 3). Every page's resume token says where the pass stands; handing it back
continues after that page. When the last sweep ends, the token holds the new checkpoint: the
``bound`` of the run that *started* the pass, so it never moves past a bound, even when a pass
spans several runs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final, Literal

import msgspec

from engine.errors import ConfigError, RetriableError

__all__ = ["INCLUDE", "ContactSweeps", "SweepCursor", "format_time"]

Phase = Literal["full", "updated", "optout", "deleted", "done"]
INCLUDE: Final = "custom_fields,list_memberships,phone_numbers,street_addresses,notes,taggings"
_NEXT_PHASE: Final[dict[str, Phase]] = {
    "full": "done",
    "updated": "optout",
    "optout": "deleted",
    "deleted": "done",
}


def format_time(ts: datetime) -> str:
    """ISO-8601 in UTC with milliseconds, the form the API documents (…T16:37:59.091Z)."""
    ts = ts.astimezone(UTC)
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


class SweepCursor(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The resume token's content (encoded as JSON text)."""

    v: int = 1
    phase: Phase
    start: datetime  # the bound of the run that began this pass: the checkpoint once done
    since: datetime | None = None  # incremental sweeps: updated/optout after this
    next: str | None = None  # the API's next-page link within the current phase


_enc: Final = msgspec.json.Encoder()
_dec: Final = msgspec.json.Decoder(SweepCursor)


class ContactSweeps:
    """Yields request (path, params) pairs and turns each page's next link into a token."""

    def __init__(
        self,
        resume: str | None,
        bound: datetime,
        *,
        overlap: timedelta = timedelta(minutes=5),
        page_size: int = 500,
    ) -> None:
        self._page_size = page_size
        self._visited: set[str] = set()
        if resume is None:
            self._cur = SweepCursor(phase="full", start=bound)
            return
        try:
            cur = _dec.decode(resume)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ConfigError("ctct checkpoint", f"not a contact resume token: {exc}") from exc
        if cur.phase == "done":
            # A new incremental pass from the last checkpoint, looking back by the overlap.
            self._cur = SweepCursor(phase="updated", start=bound, since=cur.start - overlap)
        else:
            # Resuming an interrupted pass: its checkpoint is the earlier of the two bounds.
            self._cur = msgspec.structs.replace(cur, start=min(cur.start, bound))

    @property
    def done(self) -> bool:
        return self._cur.phase == "done"

    @property
    def full_scan(self) -> bool:
        return self._cur.phase == "full"

    @property
    def phase(self) -> Phase:
        return self._cur.phase

    @property
    def checkpoint(self) -> datetime | None:
        """The new checkpoint once the pass is done."""
        return self._cur.start if self.done else None

    def request(self) -> tuple[str, dict[str, str]]:
        """The next request: an API next link (no params) or ``/contacts`` with a query."""
        cur = self._cur
        if cur.phase == "done":
            raise RuntimeError("the pass is done")
        if cur.next is not None:
            return cur.next, {}
        params = {"include": INCLUDE, "limit": str(self._page_size)}
        if cur.phase == "full":
            params["status"] = "all"
        else:
            assert cur.since is not None
            since = format_time(cur.since)
            if cur.phase == "updated":
                params["updated_after"] = since
            elif cur.phase == "optout":
                params["optout_after"] = since
            else:
                params["status"] = "deleted"
                params["updated_after"] = since
        return "/contacts", params

    def advance(self, next_href: str | None) -> str:
        """Record that the current request's page arrived; return the token after it."""
        cur = self._cur
        if next_href is not None:
            if next_href in self._visited:
                raise RetriableError(f"the API sent a next link already visited: {next_href}")
            self._visited.add(next_href)
            self._cur = msgspec.structs.replace(cur, next=next_href)
        else:
            phase = _NEXT_PHASE[cur.phase]
            self._visited.clear()
            if phase == "done":
                self._cur = SweepCursor(phase="done", start=cur.start)
            else:
                self._cur = msgspec.structs.replace(cur, phase=phase, next=None)
        return self.token()

    def restart_phase(self) -> None:
        """Forget the current next link (the API refused it): the phase starts over."""
        self._cur = msgspec.structs.replace(self._cur, next=None)
        self._visited.clear()

    def token(self) -> str:
        return _enc.encode(self._cur).decode()
