"""ContactSweeps: the resume token walks full fetch -> checkpoint -> three incremental sweeps."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from adapters.constant_contact.paging import INCLUDE, ContactSweeps, format_time
from engine.errors import ConfigError, RetriableError

T0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)


def test_first_run_is_a_full_fetch_of_every_status() -> None:
    s = ContactSweeps(None, T0)
    path, params = s.request()
    assert path == "/contacts"
    assert params == {"include": INCLUDE, "limit": "500", "status": "all"}
    assert s.full_scan


def test_full_fetch_pages_resume_after_the_last_committed_page() -> None:
    s = ContactSweeps(None, T0)
    token = s.advance("/v3/contacts?cursor=abc")
    resumed = ContactSweeps(token, T1)
    assert resumed.request() == ("/v3/contacts?cursor=abc", {})
    assert resumed.full_scan
    # the pass's checkpoint is the bound of the run that began it, never the later one
    done = ContactSweeps(resumed.advance(None), T1)
    assert json.loads(resumed.token())["phase"] == "done"
    assert json.loads(resumed.token())["start"].startswith("2026-05-01T12:00:00")
    assert done.phase == "updated"


def test_incremental_pass_has_three_sweeps_looking_back_by_the_overlap() -> None:
    first = ContactSweeps(None, T0)
    done_token = first.advance(None)
    assert first.checkpoint == T0
    s = ContactSweeps(done_token, T1, overlap=timedelta(minutes=5))
    since = format_time(T0 - timedelta(minutes=5))
    seen = []
    while not s.done:
        _path, params = s.request()
        seen.append(params)
        assert not s.full_scan
        s.advance(None)
    assert [p.get("updated_after") for p in seen] == [since, None, since]
    assert seen[1]["optout_after"] == since
    assert seen[2]["status"] == "deleted"
    assert all(p["include"] == INCLUDE and p["limit"] == "500" for p in seen)
    assert s.checkpoint == T1


def test_checkpoint_never_passes_the_bound_even_when_resumed_with_an_earlier_bound() -> None:
    s = ContactSweeps(None, T1)
    token = s.advance("/v3/contacts?cursor=1")
    resumed = ContactSweeps(token, T0)  # a clock stepped back: the earlier bound wins
    resumed.advance(None)
    assert resumed.checkpoint == T0


def test_a_next_link_seen_twice_in_one_sweep_is_refused_instead_of_looping() -> None:
    s = ContactSweeps(None, T0)
    s.advance("/v3/contacts?cursor=1")
    with pytest.raises(RetriableError):
        s.advance("/v3/contacts?cursor=1")


def test_garbage_token_is_a_clear_error() -> None:
    with pytest.raises(ConfigError):
        ContactSweeps("not json", T0)


def test_times_are_sent_in_utc_with_milliseconds() -> None:
    ts = datetime(2022, 1, 1, 11, 37, 59, 91_500, tzinfo=UTC) + timedelta(hours=5)
    assert format_time(ts) == "2022-01-01T16:37:59.091Z"
