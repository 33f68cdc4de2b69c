"""Bulk activities: POST one, poll it to an end state, and spread its result over commands.

Activity errors are plain strings. Imports name the row (``row 3: email: ...``, 1-based in
``import_data`` order) and membership and delete activities name the contact id, so each error
fails the command it concerns and the rest of the batch succeeds. ``cannot_add_to_list_count``
(unsubscribed contacts an import did not add to lists) comes back as a detail.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

import msgspec
import structlog

from engine.commands import Command, Outcome, command_id
from engine.errors import RetriableError

from .client import CtctClient, CtctRequestError
from .config import CtctConfig
from .schema import Activity

__all__ = ["ActivityRunner", "failed", "spread", "succeeded"]

log = structlog.get_logger("ccsync.ctct")
_DONE: Final = frozenset(("completed", "failed", "cancelled", "timed_out"))
_ROW_RE: Final = re.compile(r"^row (\d+):")
_activity: Final = msgspec.json.Decoder(Activity)


def succeeded(cmd: Command, detail: str | None = None, store_id: str | None = None) -> Outcome:
    return Outcome(command_id=command_id(cmd), ok=True, detail=detail, store_id=store_id)


def failed(cmd: Command, error: str, *, retriable: bool = False) -> Outcome:
    return Outcome(command_id=command_id(cmd), ok=False, error=error, retriable=retriable)


class ActivityRunner:
    """Runs bulk activities for one client, polling at the configured interval."""

    def __init__(
        self,
        client: CtctClient,
        cfg: CtctConfig,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._client = client
        self._cfg = cfg
        self._sleep = sleep

    async def run(
        self, kind: str, body: bytes, cmds: Sequence[tuple[int, Command]]
    ) -> dict[int, Outcome]:
        """POST one activity, poll it to an end state, and spread its result over ``cmds``.

        ``cmds`` pairs each command with its index in the caller's batch, in payload order.
        """
        try:
            act = await self._client.call(
                "POST", f"/activities/{kind}", _activity.decode, body=body
            )
            act = await self.poll(act)
        except CtctRequestError as exc:
            return {i: failed(c, exc.text, retriable=exc.status == 429) for i, c in cmds}
        except RetriableError as exc:
            return {i: failed(c, str(exc), retriable=True) for i, c in cmds}
        log.info("ctct.activity_done", kind=kind, state=act.state, items=len(cmds))
        if act.state != "completed":
            errors = "; ".join(_text(e) for e in act.activity_errors) or act.state
            return {
                i: failed(c, f"{kind} activity {act.state}: {errors}", retriable=True)
                for i, c in cmds
            }
        return spread(act, cmds, by_row=kind == "contacts_json_import")

    async def poll(self, act: Activity) -> Activity:
        deadline = time.monotonic() + self._cfg.activity_timeout
        while act.state not in _DONE:
            if time.monotonic() > deadline:
                raise RetriableError(
                    f"activity {act.activity_id} still {act.state} after "
                    f"{self._cfg.activity_timeout:.0f}s"
                )
            if self._cfg.activity_poll_interval > 0:
                await self._sleep(self._cfg.activity_poll_interval)
            act = await self._client.call("GET", f"/activities/{act.activity_id}", _activity.decode)
        return act


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
