"""The outbox: ``command.issued`` is recorded before anything is sent; ``command.applied`` or
``command.failed`` (with the store's own error) after.

A command already applied is never sent again (its id is its content). After a crash, commands
issued without an outcome are sent again at the next start: commands state an end state, so
that is harmless. Failed commands are retried on later cycles with exponential backoff.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Final

import msgspec
import structlog

from engine.commands import Command, Outcome, command_id, command_kind
from engine.errors import CcsyncError, FatalError, RetriableError
from engine.events import CommandApplied, CommandFailed, CommandIssued, content_id
from engine.log import EventLog, NewEvent, parse_ts
from engine.model import Store
from engine.ports import CommandSink
from projections.projector import Projector

__all__ = ["Outbox", "OutboxStats", "backoff"]

_log: Final = structlog.get_logger("ccsync.outbox")
BACKOFF_BASE: Final = timedelta(minutes=1)
BACKOFF_MAX: Final = timedelta(hours=6)


def backoff(attempts: int) -> timedelta:
    """Delay before retrying a command that failed ``attempts`` times."""
    delay: timedelta = BACKOFF_BASE * (2 ** max(attempts - 1, 0))
    return min(delay, BACKOFF_MAX)


class OutboxStats(msgspec.Struct):
    issued: dict[str, int] = msgspec.field(default_factory=dict)
    applied: int = 0
    failed: int = 0
    skipped: int = 0  # decided again, but already applied (or waiting for its retry time)


class Outbox:
    """Issues, executes and records commands through the stores' CommandSinks."""

    def __init__(
        self, log: EventLog, projector: Projector, sinks: Mapping[Store, CommandSink]
    ) -> None:
        self.log = log
        self.projector = projector
        self.sinks = sinks

    async def _known(self, ids: Sequence[str]) -> dict[str, tuple[str, int, str | None]]:
        out: dict[str, tuple[str, int, str | None]] = {}
        for i in range(0, len(ids), 900):
            chunk = ids[i : i + 900]
            rows = await self.log.connection.execute_fetchall(
                "SELECT command_id, status, attempts, outcome_at FROM p_commands "
                f"WHERE command_id IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            for cid, status, attempts, at in rows:
                out[cid] = (status, attempts, at)
        return out

    async def pending(self, now: datetime) -> list[Command]:
        """Commands to send again: issued without outcome (a crash), or failed and due."""
        rows = await self.log.connection.execute_fetchall(
            "SELECT command, status, attempts, outcome_at FROM p_commands "
            "WHERE status IN ('issued', 'failed') ORDER BY issued_position"
        )
        out = []
        for blob, status, attempts, at in rows:
            if status == "failed" and at and parse_ts(at) + backoff(attempts) > now:
                continue
            out.append(msgspec.json.decode(blob, type=Command))
        return out

    async def run(
        self,
        commands: Sequence[Command],
        run_id: str,
        now: datetime,
        *,
        extra: Sequence[NewEvent] = (),
        checkpoints: Mapping[str, str] | None = None,
        retry: bool = False,
    ) -> OutboxStats:
        """Issue and execute ``commands``; ``extra`` events and ``checkpoints`` are appended
        atomically with the issue records (e.g. the reconciler's decisions and checkpoint).

        ``retry`` sends commands that are issued or failed already (the start-up recovery).
        """
        stats = OutboxStats()
        unique = list({command_id(c): c for c in commands}.items())
        known = await self._known([cid for cid, _ in unique])
        todo: list[tuple[str, Command]] = []
        for cid, cmd in unique:
            status = known.get(cid)
            if status is not None:
                state, attempts, at = status
                if state == "applied":
                    stats.skipped += 1
                    continue
                if not retry and (
                    state == "issued" or (at and parse_ts(at) + backoff(attempts) > now)
                ):
                    stats.skipped += 1
                    continue
            todo.append((cid, cmd))
        issued = []
        for cid, cmd in todo:
            issue = CommandIssued(
                store=cmd.target,
                key=cid,
                kind=command_kind(cmd),
                command=msgspec.to_builtins(cmd),
                run_id=run_id,
            )
            issued.append(NewEvent(content_id(issue), issue))
            stats.issued[issue.kind] = stats.issued.get(issue.kind, 0) + 1
        if issued or extra or checkpoints:
            await self.log.append([*extra, *issued], checkpoints=checkpoints)
            await self.projector.catch_up()
        if not todo:
            return stats
        outcomes: list[tuple[str, Command, Outcome]] = []
        fatal: CcsyncError | None = None
        for target in ("ctct", "app"):
            batch = [(cid, c) for cid, c in todo if c.target == target]
            if not batch:
                continue
            try:
                results = await self.sinks[target].apply([c for _, c in batch])
            except CcsyncError as exc:
                retriable = isinstance(exc, RetriableError) or not isinstance(exc, FatalError)
                results = [
                    Outcome(command_id=cid, ok=False, error=str(exc), retriable=retriable)
                    for cid, _ in batch
                ]
                if isinstance(exc, FatalError):
                    fatal = exc
            for (cid, cmd), res in zip(batch, results, strict=True):
                outcomes.append((cid, cmd, res))
        records = []
        for cid, cmd, res in outcomes:
            store = cmd.target
            ev: CommandApplied | CommandFailed
            if res.ok:
                ev = CommandApplied(store=store, key=cid, run_id=run_id, detail=res.detail)
                stats.applied += 1
            else:
                ev = CommandFailed(
                    store=store,
                    key=cid,
                    run_id=run_id,
                    error=res.error or "failed",
                    retriable=res.retriable,
                )
                stats.failed += 1
                _log.warning(
                    "outbox.command_failed",
                    command_id=cid,
                    kind=command_kind(cmd),
                    target=store,
                    email=cmd.email,
                    error=res.error,
                )
            records.append(NewEvent(content_id(ev), ev))
        await self.log.append(records)
        await self.projector.catch_up()
        if fatal is not None:
            raise fatal
        return stats
