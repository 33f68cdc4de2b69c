"""What `ccsync status` and the daemon's /metrics report: read from the log's projections."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

import msgspec

from engine.log import EventLog, parse_ts
from projections.schema import UNSETTLED

__all__ = ["CheckpointStatus", "FailedCommand", "RunStatus", "Status", "read_status"]


class CheckpointStatus(msgspec.Struct, frozen=True):
    name: str
    updated_at: str
    lag_seconds: float


class RunStatus(msgspec.Struct, frozen=True):
    run_id: str
    mode: str
    started_at: str
    finished_at: str | None
    outcome: str | None
    counts: dict[str, int] | None
    error: str | None


class FailedCommand(msgspec.Struct, frozen=True):
    command_id: str
    target: str
    kind: str
    email: str
    attempts: int
    failed_at: str | None
    error: str | None


class Status(msgspec.Struct, kw_only=True):
    events: int
    projected: int
    checkpoints: list[CheckpointStatus]
    runs: list[RunStatus]
    commands: dict[str, int]
    failed: list[FailedCommand]
    pending: int
    oldest_unpropagated_optout_seconds: float | None = None
    # Constant Contact requests this process family made since 00:00 UTC (summed from the
    # recorded cycles), and the quota error of the last cycle, if it hit one.
    api_requests_today: int = 0
    quota_exhausted: str | None = None


async def _has_projections(log: EventLog) -> bool:
    rows = await log.connection.execute_fetchall(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'p_runs'"
    )
    return bool(list(rows))


_COUNTS: Final = "SELECT status, COUNT(*) FROM p_commands GROUP BY status"
_OPEN_COUNTS: Final = f"SELECT status, COUNT(*) FROM p_commands WHERE {UNSETTLED} GROUP BY status"


async def read_status(
    log: EventLog, now: datetime, *, runs: int = 5, settled: bool = True
) -> Status:
    """A snapshot of the engine's state as the log records it. ``settled=False`` leaves the
    settled commands (confirmed, superseded) out of ``commands``: counting them reads every
    command ever issued, which a caller reading this every second or every cycle (the
    daemon) must not pay."""
    head = await log.head()
    cps = [
        CheckpointStatus(name, at, (now - parse_ts(at)).total_seconds())
        for name, (_v, _p, at) in (await log.checkpoints()).items()
    ]
    if not await _has_projections(log):
        return Status(
            events=head.position,
            projected=0,
            checkpoints=cps,
            runs=[],
            commands={},
            failed=[],
            pending=0,
        )
    conn = log.connection
    proj = list(await conn.execute_fetchall("SELECT position FROM p_checkpoint"))
    run_rows = await conn.execute_fetchall(
        "SELECT run_id, mode, started_at, finished_at, outcome, counts, error FROM p_runs "
        "ORDER BY started_position DESC LIMIT ?",
        (runs,),
    )
    run_list = [
        RunStatus(
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            msgspec.json.decode(r[5], type=dict[str, int]) if r[5] else None,
            r[6],
        )
        for r in run_rows
    ]
    rows = await conn.execute_fetchall(_COUNTS if settled else _OPEN_COUNTS)
    counts: dict[str, int] = {str(r[0]): int(r[1]) for r in rows}
    failed = [
        FailedCommand(*r)
        for r in await conn.execute_fetchall(
            "SELECT command_id, target, kind, email, attempts, outcome_at, error FROM p_commands "
            f"INDEXED BY p_commands_open WHERE {UNSETTLED} AND status = 'failed' "
            "ORDER BY outcome_position DESC LIMIT 50"
        )
    ]
    today = now.astimezone(UTC).strftime("%Y-%m-%dT00:00:00")
    used = 0
    for (blob,) in await conn.execute_fetchall(
        "SELECT counts FROM p_runs WHERE started_at >= ? AND counts IS NOT NULL", (today,)
    ):
        used += int(msgspec.json.decode(blob, type=dict[str, int]).get("api_requests", 0))
    quota = next((r.error for r in run_list[:1] if r.error and "quota" in r.error.lower()), None)
    return Status(
        api_requests_today=used,
        quota_exhausted=quota,
        events=head.position,
        projected=int(proj[0][0]) if proj else 0,
        checkpoints=cps,
        runs=run_list,
        commands=counts,
        failed=failed,
        pending=counts.get("issued", 0),
    )
