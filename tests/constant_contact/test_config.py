"""CtctConfig.from_toml: defaults, secrets only from the environment, errors naming the key."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from adapters.constant_contact import CtctConfig
from engine.errors import ConfigError

ENV = {"CCSYNC_CTCT_ACCESS_TOKEN": "tok-abc"}


def test_defaults_follow_the_api_limits(tmp_path: Path) -> None:
    cfg = CtctConfig.from_toml({"client_id": "app", "token_file": str(tmp_path / "t.json")}, env={})
    assert cfg.requests_per_second == 4
    assert cfg.daily_budget == 10_000
    assert cfg.overlap == timedelta(minutes=5)
    assert cfg.page_size == 500
    assert cfg.base_url == "https://api.cc.email/v3"
    assert cfg.token_file == tmp_path / "t.json"


def test_secrets_come_from_the_environment_and_never_show_in_repr() -> None:
    env = {**ENV, "CCSYNC_CTCT_CLIENT_SECRET": "s3cret", "CCSYNC_CTCT_REFRESH_TOKEN": "r-xyz"}
    cfg = CtctConfig.from_toml({"client_id": "app"}, env=env)
    assert cfg.client_secret is not None and cfg.client_secret.reveal() == "s3cret"
    assert cfg.refresh_token is not None and cfg.refresh_token.reveal() == "r-xyz"
    shown = repr(cfg)
    assert "s3cret" not in shown and "tok-abc" not in shown and "r-xyz" not in shown


@pytest.mark.parametrize("key", ["client_secret", "access_token", "refresh_token"])
def test_a_secret_in_the_file_is_refused_with_the_variable_to_use(key: str) -> None:
    with pytest.raises(ConfigError) as info:
        CtctConfig.from_toml({"client_id": "app", key: "x"}, env=ENV)
    assert info.value.key == f"ctct.{key}"
    assert "CCSYNC_CTCT_" in str(info.value)


@pytest.mark.parametrize(
    ("doc", "key"),
    [
        ({"client_id": "app", "requests_per_second": "fast"}, "ctct.requests_per_second"),
        ({"client_id": "app", "requests_per_second": 0}, "ctct.requests_per_second"),
        ({"client_id": "app", "daily_budget": 1.5}, "ctct.daily_budget"),
        ({"client_id": "app", "page_size": 501}, "ctct.page_size"),
        ({"client_id": "app", "base_url": "ftp://x"}, "ctct.base_url"),
        ({"client_id": "app", "tracking": "yes"}, "ctct.tracking"),
        ({"client_id": "app", "overlap_seconds": -1}, "ctct.overlap_seconds"),
        ({"client_id": "app", "retries": True}, "ctct.retries"),
        ({"client_id": "app", "colour": "blue"}, "ctct.colour"),
        ({}, "ctct.client_id"),
    ],
)
def test_bad_values_name_the_key(doc: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        CtctConfig.from_toml(doc, env=ENV)
    assert info.value.key == key


def test_no_credentials_at_all_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        CtctConfig.from_toml({"client_id": "app"}, env={})
    assert info.value.key == "ctct.token_file"
    assert "ccsync auth login" in str(info.value)
