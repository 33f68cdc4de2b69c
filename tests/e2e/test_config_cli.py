"""The config as a user meets it: `ccsync init` writes a valid, commented file; a broken one
stops every command at start with one line naming the key and the problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.settings import load_settings


def ccsync(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_init_writes_a_config_that_loads(tmp_path: Path) -> None:
    done = ccsync("init", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    settings = load_settings(tmp_path / "ccsync.toml")
    assert settings.log_path == tmp_path / "ccsync.db"
    assert settings.policy.source_of_record == "app"
    again = ccsync("init", cwd=tmp_path)
    assert again.returncode == 2
    assert "exists" in again.stderr


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("interval_seconds = 900", "interval_seconds = 'soon'", "sync.interval_seconds"),
        ('source_of_record = "app"', "source_of_record = 'crm'", "policy.source_of_record"),
        ('durability = "normal"', "durability = 'fast'", "log.durability"),
        ("[ctct]", "[ctct]\nclient_secret = 's3cret'", "ctct.client_secret"),
        ('email = "email"', "email = 'e-mail address'", "appdb.contacts.email"),
        ("[appdb.contacts]", "[appdb.contacts]\nmood = 'happy'", "appdb.contacts.mood"),
        ('ctct = "Newsletter"', "ctct = 42", "lists[0].ctct"),
    ],
)
def test_a_broken_config_fails_with_one_line_naming_the_key(
    tmp_path: Path, old: str, new: str, key: str
) -> None:
    assert ccsync("init", cwd=tmp_path).returncode == 0
    config = tmp_path / "ccsync.toml"
    text = config.read_text()
    assert old in text
    config.write_text(text.replace(old, new, 1))
    done = ccsync("sync", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert key in lines[0]
    assert "Traceback" not in done.stderr


def test_a_missing_config_says_how_to_make_one(tmp_path: Path) -> None:
    done = ccsync("status", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "ccsync: error: config: ccsync.toml: no such config file (create one with `ccsync init`)"
    ]
