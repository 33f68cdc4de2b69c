"""A writer SIGKILLed in the middle of appending leaves whole batches, a sound chain, no lock."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
from pathlib import Path

import pytest

from engine.log import EventLog
from engine.logverify import verify_log

ROOT = Path(__file__).resolve().parents[2]
KILLS = 25
BATCH = 40


async def _check(path: Path, reported: int) -> int:
    # Opening as the writer proves the killed process's lock went with it.
    async with await EventLog.open(path) as log:
        report = await verify_log(log)
        assert report.ok, report.problems
        count = report.checked
        assert count % BATCH == 0, f"{count} events: a batch was cut in half"
        batches = count // BATCH
        assert batches >= reported, "a batch reported committed is gone"
        # The checkpoint was written in each batch's transaction: it names the same batch.
        assert await log.checkpoint("churn") == (str(batches) if batches else None)
        return batches


@pytest.mark.slow
def test_sigkill_while_appending_never_leaves_half_a_batch(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    rng = random.Random(2)  # fixed: a failure can be replayed
    batches = 0
    mid_run_kills = 0
    for _ in range(KILLS):
        kill_after_ms = f"{rng.uniform(0, 60):.3f}"
        child = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.log._child",
                "churn",
                str(path),
                str(BATCH),
                kill_after_ms,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert child.returncode == -9, child.stderr  # died of SIGKILL, not of an error
        lines = child.stdout.splitlines()
        assert lines[0] == f"ready {batches}"
        reported = int(lines[-1]) if len(lines) > 1 else batches
        before = batches
        batches = asyncio.run(_check(path, reported))
        mid_run_kills += batches > before
    # The kills must have interrupted real work, not just idle processes.
    assert mid_run_kills >= KILLS // 2
    assert batches > KILLS
