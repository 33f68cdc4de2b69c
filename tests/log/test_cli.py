"""`ccsync log verify|anchor|stats|show`, driven as a user would: in a subprocess.

Each tampering is done with the stdlib sqlite3 client, the way an attacker or a careless
operator would, and the append-only triggers are put back afterwards so that it is the hash
chain (not the missing trigger) that gives the change away.
"""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import pytest_asyncio

from engine._logschema import SCHEMA
from engine.cli import main
from engine.log import EventLog
from tests.log.conftest import Clock
from tests.log.samples import T0, every_event, membership, new

ROOT = Path(__file__).resolve().parents[2]


def ccsync(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", "log", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest_asyncio.fixture
async def built(log_path: Path) -> Path:
    """A closed log of 20 events in 4 batches, recorded at T0, T0+1m, T0+2m, T0+3m."""
    clock = Clock()
    async with await EventLog.open(log_path, clock=clock) as log:
        samples = every_event()
        for b in range(4):
            batch = [new(membership(j % 2, f"{b}-{j}")) for j in range(3)]
            batch += [new(samples[b]), new(samples[b + 4])]
            await log.append(batch, checkpoints={"ctct.contacts": f"page-{b}"})
            clock.advance(minutes=1)
    return log_path


def tamper(path: Path, *statements: str) -> None:
    raw = sqlite3.connect(path)
    raw.execute("DROP TRIGGER events_append_only_update")
    raw.execute("DROP TRIGGER events_append_only_delete")
    for sql in statements:
        raw.execute(sql)
    raw.commit()
    raw.executescript(SCHEMA)  # triggers back, as a careful attacker would leave them
    raw.close()


# sqlite's replace() returns TEXT: cast back, so the storage type is as the log wrote it.
EDIT_7 = (
    "UPDATE events SET payload = CAST(replace(CAST(payload AS TEXT), 'c1', 'c9') AS BLOB) "
    "WHERE position = 7"
)


def _swap_rows(a: int, b: int) -> tuple[str, ...]:
    return (
        f"UPDATE events SET position = -1 WHERE position = {a}",
        f"UPDATE events SET position = {a} WHERE position = {b}",
        f"UPDATE events SET position = {b} WHERE position = -1",
    )


def test_verify_passes_an_untouched_log(built: Path) -> None:
    done = ccsync("verify", "--log", str(built))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok: 20 events, head position 20 hash ")


@pytest.mark.parametrize(
    ("statements", "first_bad", "says"),
    [
        pytest.param(
            (EDIT_7,),
            7,
            "position 7: hash mismatch",
            id="edited-payload",
        ),
        pytest.param(
            ("DELETE FROM events WHERE position = 12",),
            12,
            "position 12: missing (gap up to 12); rows were deleted",
            id="deleted-row",
        ),
        pytest.param(
            _swap_rows(9, 14),
            9,
            "position 9: hash mismatch",
            id="reordered-rows",
        ),
        pytest.param(
            ("UPDATE events SET recorded_at = '2024-05-01T09:29:00.000000Z' WHERE position = 16",),
            16,
            "position 16: recorded_at 2024-05-01T09:29:00.000000Z is before",
            id="backdated-row",
        ),
        pytest.param(
            ("UPDATE events SET payload = CAST(payload AS TEXT) WHERE position = 3",),
            3,
            "position 3: wrong storage type for payload (str)",
            id="payload-as-text",
        ),
    ],
)
def test_verify_catches_tampering_and_names_the_first_bad_position(
    built: Path, statements: tuple[str, ...], first_bad: int, says: str
) -> None:
    tamper(built, *statements)
    done = ccsync("verify", "--log", str(built))
    assert done.returncode == 1
    assert f"FAILED: first bad position {first_bad}" in done.stderr
    assert says in done.stderr


def test_verify_reports_dropped_triggers(built: Path) -> None:
    raw = sqlite3.connect(built)
    raw.execute("DROP TRIGGER events_append_only_delete")
    raw.close()
    done = ccsync("verify", "--log", str(built))
    assert done.returncode == 1
    assert "append-only trigger events_append_only_delete is missing" in done.stderr


def test_anchor_detects_a_truncated_tail(built: Path, tmp_path: Path) -> None:
    anchor = tmp_path / "anchor.json"
    made = ccsync("anchor", "--log", str(built))
    assert made.returncode == 0, made.stderr
    head = json.loads(made.stdout)
    assert head["position"] == 20 and len(head["hash"]) == 64
    anchor.write_text(made.stdout)

    tamper(built, "DELETE FROM events WHERE position > 17")
    # Without the anchor, a clean cut at the end is indistinguishable from a shorter log...
    assert ccsync("verify", "--log", str(built)).returncode == 0
    # ...with it, the missing rows are named.
    done = ccsync("verify", "--log", str(built), "--anchor", str(anchor))
    assert done.returncode == 1
    assert "FAILED: first bad position 18" in done.stderr
    assert "the log ends at position 17 but the anchor records position 20" in done.stderr


def test_anchor_detects_a_rewritten_history(built: Path, tmp_path: Path) -> None:
    anchor = tmp_path / "anchor.json"
    anchor.write_text(ccsync("anchor", "--log", str(built)).stdout)
    # Rehash the whole chain after an edit: verify alone cannot tell, the anchor can.
    from engine._logschema import GENESIS, row_hash

    tamper(built, EDIT_7)
    raw = sqlite3.connect(built)
    raw.execute("DROP TRIGGER events_append_only_update")
    prev = GENESIS
    for row in raw.execute("SELECT * FROM events ORDER BY position").fetchall():
        prev = row_hash(prev, *row[:8])
        raw.execute("UPDATE events SET hash = ? WHERE position = ?", (prev, row[0]))
    raw.commit()
    raw.executescript(SCHEMA)
    raw.close()
    assert ccsync("verify", "--log", str(built)).returncode == 0
    done = ccsync("verify", "--log", str(built), "--anchor", str(anchor))
    assert done.returncode == 1
    assert "position 20: hash differs from the anchor" in done.stderr


def test_verify_with_a_broken_anchor_file_says_so(built: Path, tmp_path: Path) -> None:
    bad = tmp_path / "anchor.json"
    bad.write_text('{"position": "twenty"}')
    done = ccsync("verify", "--log", str(built), "--anchor", str(bad))
    assert done.returncode != 0
    assert "--anchor" in done.stderr and "Traceback" not in done.stderr


def test_missing_log_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    done = ccsync("verify", "--log", str(tmp_path / "nope.db"))
    assert done.returncode == 2
    assert "no event log at" in done.stderr and "Traceback" not in done.stderr


def _shown(built: Path, *filters: str) -> list[dict[str, object]]:
    # show and stats run in-process through the same entry point as the console script:
    # a subprocess per filter would cost the suite a second each for imports alone.
    out = io.BytesIO()
    with contextlib.redirect_stdout(io.TextIOWrapper(out, encoding="utf-8")) as text:
        code = main(["log", "show", "--log", str(built), *filters])
        text.flush()
    assert code == 0
    return [json.loads(line) for line in out.getvalue().splitlines()]


@pytest.mark.parametrize(
    ("filters", "positions"),
    [
        ((), list(range(1, 21))),
        (("--from", "6", "--to", "8"), [6, 7, 8]),
        (("--stream", "app:contact:c1"), [2, 7, 12, 17]),
        (("--stream", "app:contact:c1", "--from", "7", "--to", "12"), [7, 12]),
        (("--stream", "app:contact:c1", "--since", "2024-05-01T09:32:00Z"), [12, 17]),
        (("--stream", "app:contact:c1", "--until", "2024-05-01T09:31:00Z"), [2]),
        (("--type", "membership.added"), [1, 2, 3, 6, 7, 8, 10, 11, 12, 13, 16, 17, 18]),
        (("--type", "contact.observed", "--type", "contact.changed"), [4, 9]),
        (
            ("--since", "2024-05-01T09:31:00Z", "--until", "2024-05-01T09:33:00Z"),
            list(range(6, 16)),
        ),
        (("--since", "2024-05-01T10:31:00+01:00", "--to", "12"), [6, 7, 8, 9, 10, 11, 12]),
    ],
)
def test_show_filters(built: Path, filters: tuple[str, ...], positions: list[int]) -> None:
    assert [e["position"] for e in _shown(built, *filters)] == positions


def test_show_prints_whole_events_as_json_lines(built: Path) -> None:
    [first] = _shown(built, "--from", "4", "--to", "4")
    assert first["stream"].startswith("ctct:contact:")  # type: ignore[attr-defined]
    assert first["recorded_at"] == "2024-05-01T09:30:00Z"
    event = first["event"]
    assert isinstance(event, dict)
    assert event["type"] == "contact.observed"
    assert event["contact"]["fields"]["address_home_city"] == "Zürich"


def test_show_refuses_a_time_without_a_zone(built: Path) -> None:
    done = ccsync("show", "--log", str(built), "--since", "2024-05-01T09:31:00")
    assert done.returncode == 2
    assert "give a time zone" in done.stderr


def test_stats(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["log", "stats", "--log", str(built)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["events"] == 20
    # c0, c1; the ctct contact, app contact 4711, app rejected record 4712 of the samples
    assert stats["streams"] == 5
    assert stats["by_type"]["membership.added"] == 13
    assert stats["head"]["position"] == 20
    assert stats["head"]["recorded_at"] == (T0 + timedelta(minutes=3)).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ"
    )
    assert stats["checkpoints"]["ctct.contacts"]["position"] == 20
    assert stats["file_bytes"] > 0
