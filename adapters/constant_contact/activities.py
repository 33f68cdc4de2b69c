"""Bulk activities: POST them all, poll them together to an end state, spread the results.

Activity errors are plain strings. Imports name the row (``row 3: email: ...``, 1-based in
``import_data`` order) and membership and delete activities name the contact id, so each error
fails the command it concerns and the rest of the batch succeeds. ``cannot_add_to_list_count``
(unsubscribed contacts an import did not add to lists) comes back as a detail.

Polling costs requests from the same 4/s and 10,000/day budget as everything else, so it is
kept to what the API allows: every activity of a batch is submitted before any is polled; one
activity in flight is polled with GET /activities/{id}, several with one GET /activities (the
account's activities, newest first, each with its state, errors and counts), so a round costs
one request however many are in flight; and the wait between rounds starts at
``activity_poll_interval`` and doubles up to ``activity_poll_max``, so a slow activity costs
about log2(duration / interval) polls, not duration / interval.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

import msgspec
import structlog

from engine.commands import Command, Outcome, command_id
from engine.errors import RetriableError

from .client import CtctClient, CtctRequestError
from .config import CtctConfig
from .schema import ActivitiesPage, Activity

__all__ = ["ActivityRunner", "Submitted", "failed", "spread", "succeeded"]

log = structlog.get_logger("ccsync.ctct")
_DONE: Final = frozenset(("completed", "failed", "cancelled", "timed_out"))
_ROW_RE: Final = re.compile(r"^row (\d+):")
_activity: Final = msgspec.json.Decoder(Activity)
_activities: Final = msgspec.json.Decoder(ActivitiesPage)
# Room in a GET /activities page for activities others submitted after ours (newest first).
_LIST_SLACK: Final = 50
_LIST_MAX: Final = 500  # the API's largest page


def succeeded(cmd: Command, detail: str | None = None, store_id: str | None = None) -> Outcome:
    return Outcome(command_id=command_id(cmd), ok=True, detail=detail, store_id=store_id)


def failed(cmd: Command, error: str, *, retriable: bool = False) -> Outcome:
    return Outcome(command_id=command_id(cmd), ok=False, error=error, retriable=retriable)


@dataclass
class Submitted:
    """One activity POSTed for ``cmds`` (index in the caller's batch, command; payload order),
    or the outcomes of a POST that was refused."""

    kind: str
    cmds: Sequence[tuple[int, Command]]
    activity: Activity | None = None
    refused: dict[int, Outcome] | None = None


class ActivityRunner:
    """Submits bulk activities and polls them to an end state with few requests."""

    def __init__(
        self,
        client: CtctClient,
        cfg: CtctConfig,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._cfg = cfg
        self._sleep = sleep
        self._monotonic = monotonic

    async def submit(
        self, kind: str, body: bytes, cmds: Sequence[tuple[int, Command]]
    ) -> Submitted:
        """POST one activity; a refusal becomes the outcome of each of its commands."""
        try:
            act = await self._client.call(
                "POST", f"/activities/{kind}", _activity.decode, body=body
            )
        except CtctRequestError as exc:
            refused = {i: failed(c, exc.text, retriable=exc.status == 429) for i, c in cmds}
            return Submitted(kind, cmds, refused=refused)
        except RetriableError as exc:
            return Submitted(
                kind, cmds, refused={i: failed(c, str(exc), retriable=True) for i, c in cmds}
            )
        return Submitted(kind, cmds, activity=act)

    async def finish(self, submitted: Sequence[Submitted]) -> dict[int, Outcome]:
        """Poll every submitted activity to an end state; one Outcome per command."""
        out: dict[int, Outcome] = {}
        running = {s.activity.activity_id: s.activity for s in submitted if s.activity}
        error: tuple[str, bool] | None = None  # a poll the API refused or that kept failing
        try:
            ended, late = await self.poll(running)
        except CtctRequestError as exc:
            ended, late, error = {}, running, (exc.text, exc.status == 429)
        except RetriableError as exc:
            ended, late, error = {}, running, (str(exc), True)
        for s in submitted:
            if s.refused is not None:
                out.update(s.refused)
                continue
            assert s.activity is not None
            act = ended.get(s.activity.activity_id)
            if act is None:
                if error is None:
                    state = late[s.activity.activity_id].state
                    text, retriable = (
                        f"activity {s.activity.activity_id} still {state} after "
                        f"{self._cfg.activity_timeout:.0f}s",
                        True,
                    )
                else:
                    text, retriable = error
                out.update({i: failed(c, text, retriable=retriable) for i, c in s.cmds})
                continue
            log.info("ctct.activity_done", kind=s.kind, state=act.state, items=len(s.cmds))
            if act.state != "completed":
                errors = "; ".join(_text(e) for e in act.activity_errors) or act.state
                text = f"{s.kind} activity {act.state}: {errors}"
                out.update({i: failed(c, text, retriable=True) for i, c in s.cmds})
            else:
                out.update(spread(act, s.cmds, by_row=s.kind == "contacts_json_import"))
        return out

    async def poll(
        self, running: dict[str, Activity]
    ) -> tuple[dict[str, Activity], dict[str, Activity]]:
        """Poll until every activity has ended or ``activity_timeout`` has passed: (ended,
        still running), each by activity id."""
        cfg = self._cfg
        ended = {aid: a for aid, a in running.items() if a.state in _DONE}
        waiting = {aid: a for aid, a in running.items() if a.state not in _DONE}
        deadline = self._monotonic() + cfg.activity_timeout
        interval, waited = cfg.activity_poll_interval, 0.0
        while waiting:
            # Either clock: the time spent, or the waits asked for (what tests drive).
            if self._monotonic() > deadline or waited >= cfg.activity_timeout:
                log.warning(
                    "ctct.activity_timeout",
                    activities=sorted(waiting),
                    seconds=cfg.activity_timeout,
                )
                break
            if interval > 0:
                await self._sleep(interval)
                waited += interval
                interval = min(interval * 2, max(cfg.activity_poll_max, cfg.activity_poll_interval))
            for act in await self._poll_round(waiting):
                if act.state in _DONE:
                    ended[act.activity_id] = act
                    del waiting[act.activity_id]
                else:
                    waiting[act.activity_id] = act
        return ended, waiting

    async def _poll_round(self, waiting: dict[str, Activity]) -> list[Activity]:
        """The current state of every waiting activity, in as few requests as the API allows."""
        if len(waiting) == 1:
            (aid,) = waiting
            return [await self._client.call("GET", f"/activities/{aid}", _activity.decode)]
        limit = min(_LIST_MAX, len(waiting) + _LIST_SLACK)
        page = await self._client.call(
            "GET", "/activities", _activities.decode, params={"limit": str(limit)}
        )
        found = [a for a in page.activities if a.activity_id in waiting]
        # Pushed off the page by activities submitted elsewhere since ours: ask for each.
        for aid in sorted(waiting.keys() - {a.activity_id for a in found}):
            found.append(await self._client.call("GET", f"/activities/{aid}", _activity.decode))
        return found


def _text(error: str | dict[str, str]) -> str:
    return error if isinstance(error, str) else error.get("message", str(error))


def spread(
    act: Activity, cmds: Sequence[tuple[int, Command]], *, by_row: bool
) -> dict[int, Outcome]:
    """Per-command outcomes: errors that name a contact's email or id fail that command."""
    errors = [_text(e) for e in act.activity_errors]
    lowered = [e.casefold() for e in errors]
    # Import errors name the row ("row 3: email: ..."), 1-based in import_data order.
    rows = [int(m.group(1)) if (m := _ROW_RE.match(e)) else None for e in errors]
    out: dict[int, Outcome] = {}
    unclaimed = list(errors)
    for pos, (i, cmd) in enumerate(cmds, start=1):
        keys = [k.casefold() for k in (cmd.email, cmd.store_id) if k]
        mine = [
            errors[n]
            for n, e in enumerate(lowered)
            if (by_row and rows[n] == pos) or (rows[n] is None and any(k in e for k in keys))
        ]
        if mine:
            out[i] = failed(cmd, "; ".join(mine))
            for claimed in mine:
                if claimed in unclaimed:
                    unclaimed.remove(claimed)
        else:
            out[i] = succeeded(cmd, store_id=cmd.store_id)
    status = act.status
    skipped = status.cannot_add_to_list_count if status else None
    notes = []
    if skipped:
        notes.append(
            f"{skipped} contact(s) not added to lists: unsubscribed contacts stay off lists"
        )
    if unclaimed:
        notes.append("activity errors: " + "; ".join(unclaimed))
    if notes:
        detail = "; ".join(notes)
        out = {
            i: (o if not o.ok else msgspec.structs.replace(o, detail=detail))
            for i, o in out.items()
        }
    return out
