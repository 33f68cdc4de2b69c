"""Walk the log's hash chain and report the first place where history was altered.

Detects: an edited column (hash mismatch), a deleted row (a gap in positions), a moved or
swapped row (hash mismatch, since the position is hashed; or recorded_at going backwards), an
undecodable payload or unknown event type, stream versions with holes, missing append-only
triggers, and, given an anchor kept elsewhere, truncation of the newest rows.
"""

from __future__ import annotations

from typing import Final

import msgspec

from engine._logschema import GENESIS, row_hash
from engine.codec import decode_event
from engine.errors import LogCorruptError
from engine.log import EventLog, Head

__all__ = ["Anchor", "VerifyReport", "verify_log"]

_CHUNK: Final = 5000
_MAX_PROBLEMS: Final = 20


class Anchor(msgspec.Struct, frozen=True):
    """The head an operator kept elsewhere (``ccsync log anchor``)."""

    log_id: str
    position: int
    hash: str


class VerifyReport(msgspec.Struct):
    """What verify found. ``first_bad`` is the first position at fault, if any."""

    checked: int = 0
    head: Head | None = None
    problems: list[str] = msgspec.field(default_factory=list)
    first_bad: int | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def fault(self, position: int | None, problem: str) -> None:
        if position is not None and self.first_bad is None:
            self.first_bad = position
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(problem)


async def verify_log(log: EventLog, anchor: Anchor | None = None) -> VerifyReport:
    """Check the whole log; never stops at the first problem, but reports it first."""
    report = VerifyReport(head=await log.head())
    triggers = {
        r[0]
        for r in await log._fetch(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'events'", ()
        )
    }
    for name in ("events_append_only_update", "events_append_only_delete"):
        if name not in triggers:
            report.fault(None, f"append-only trigger {name} is missing (dropped by hand?)")

    prev_hash, expect, last_ts = GENESIS, 1, ""
    anchor_hash: str | None = None
    while True:
        # log._fetch: verify is the log's companion; on a writer it must not see a half-done
        # append of another task.
        rows = await log._fetch(
            "SELECT position, event_id, stream, version, type, schema_version, recorded_at, "
            "payload, hash FROM events WHERE position >= ? ORDER BY position LIMIT ?",
            (expect, _CHUNK),
        )
        if not rows:
            break
        for pos, eid, stream, version, tag, sv, ts, payload, stored in rows:
            if pos != expect:
                report.fault(
                    expect, f"position {expect}: missing (gap up to {pos - 1}); rows were deleted"
                )
            bad_types = _bad_types(eid, stream, version, tag, sv, ts, payload, stored)
            if bad_types:
                # Only a hand-made UPDATE stores these; hashing them would raise, not report.
                report.fault(pos, f"position {pos}: wrong storage type for {bad_types}")
                prev_hash = stored if isinstance(stored, bytes) else b""
                expect, last_ts = pos + 1, str(ts)
                report.checked += 1
                continue
            if ts < last_ts:
                report.fault(
                    pos,
                    f"position {pos}: recorded_at {ts} is before the previous "
                    f"row's {last_ts}; rows were reordered",
                )
            want = row_hash(prev_hash, pos, eid, stream, version, tag, sv, ts, payload)
            if want != stored:
                report.fault(
                    pos,
                    f"position {pos}: hash mismatch; the row was altered, moved "
                    "or its predecessor removed",
                )
            try:
                decode_event(tag, sv, payload, position=pos)
            except LogCorruptError as exc:
                report.fault(pos, str(exc))
            if anchor is not None and pos == anchor.position:
                anchor_hash = stored.hex()
            prev_hash, expect, last_ts = stored, pos + 1, ts
            report.checked += 1

    holes = await log._fetch(
        "SELECT stream, COUNT(*), MAX(version) FROM events GROUP BY stream "
        "HAVING COUNT(*) != MAX(version) OR MIN(version) != 1 LIMIT 5",
        (),
    )
    for stream, count, top in holes:
        report.fault(None, f"stream {stream}: {count} events but versions up to {top}")

    if anchor is not None:
        head = report.head
        if head is not None and anchor.log_id != head.log_id:
            report.fault(
                None, f"the anchor is for log {anchor.log_id}, not this log ({head.log_id})"
            )
        elif expect - 1 < anchor.position:
            report.fault(
                expect,
                f"the log ends at position {expect - 1} but the anchor "
                f"records position {anchor.position}: the newest rows were removed",
            )
        elif anchor_hash != anchor.hash:
            report.fault(
                anchor.position,
                f"position {anchor.position}: hash differs from the "
                "anchor; history up to the anchor was rewritten",
            )
    return report


_COLUMN_TYPES: Final = (
    ("event_id", str),
    ("stream", str),
    ("version", int),
    ("type", str),
    ("schema_version", int),
    ("recorded_at", str),
    ("payload", bytes),
    ("hash", bytes),
)


def _bad_types(*values: object) -> str:
    """The columns of a row whose stored type is not what the log writes, as text."""
    return ", ".join(
        f"{name} ({type(v).__name__})"
        for (name, want), v in zip(_COLUMN_TYPES, values, strict=True)
        if not isinstance(v, want)
    )
