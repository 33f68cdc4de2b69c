"""`ccsync demo` as a new user runs it: clean exit, an audit printed, a folder to go on with."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_demo_runs_clean_and_leaves_a_folder_the_other_commands_work_in(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "demo", "--dir", str(folder),
         "--contacts", "2000", "--app-contacts", "100", "--changes", "120"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "Initial sync" in out
    # Nothing but late campaign engagement may move in a cycle where no contact changed: not
    # in the one after the initial sync either, which sees only what ccsync wrote.
    for cycle in ("Second sync", "Quiet sync"):
        line = out.split(cycle)[1].splitlines()[0]
        commands = line.split("commands: ")[1].split(";")[0]
        assert commands == "none" or commands.startswith("tracking.record"), (cycle, line)
    assert "who opted out along the way" in out
    config = folder / "ccsync.toml"
    for args in (["status", "--json"], ["audit", "opt-outs", "--format", "json"],
                 ["replay", "--check"]):  # fmt: skip
        step = subprocess.run(
            [sys.executable, "-m", "engine.cli", *args, "--config", str(config)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert step.returncode == 0, (args, step.stderr)
    status = json.loads(
        subprocess.run(
            [sys.executable, "-m", "engine.cli", "status", "--json", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
    )
    assert [r["outcome"] for r in status["runs"]] == ["ok"] * 5
    # Every refusal a cycle reported is listed by the audit, with its reason.
    reported = sum(
        int(line.split(", blocked ")[1].split(";")[0])
        for line in out.splitlines()
        if " contacts observed, commands: " in line
    )
    blocked = json.loads(
        subprocess.run(
            [sys.executable, "-m", "engine.cli", "audit", "blocked", "--format", "json",
             "--config", str(config)],
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout
    )  # fmt: skip
    assert reported > 0 and len(blocked) == reported
    assert all(b["reason"] and b["email"] and b["store"] in ("ctct", "app") for b in blocked)
