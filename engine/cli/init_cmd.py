"""``ccsync init``: write a commented config file documenting every option."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Final

from adapters.appdb import sample_config_toml

__all__ = ["TEMPLATE", "register"]

TEMPLATE: Final = """\
# ccsync configuration. Paths are relative to this file's folder.
# Secrets never live here: they come from the environment or from the token file (mode 0600):
#   CCSYNC_CTCT_CLIENT_SECRET   the application's client secret (for `ccsync auth login`)
#   CCSYNC_CTCT_ACCESS_TOKEN / CCSYNC_CTCT_REFRESH_TOKEN   tokens, instead of a token file
# A broken value stops ccsync at start with one line naming the key and the problem.

[log]
# The event log: one SQLite file, append-only and hash-chained. Back it up; keep anchors.
path = "ccsync.db"
# "normal": a power cut may lose the last transactions (never corrupts; they are re-observed).
# "full": every commit reaches the disk first (slower).
durability = "normal"

[sync]
interval_seconds = 900        # the daemon's cadence
jitter_seconds = 60           # +/- random spread so many daemons do not call at once
tracking = true               # fetch sends, opens, clicks, bounces, forwards, opt-outs
# Audit bound: an opt-out not confirmed in the other store within this many seconds is a
# violation. The next cycle sees it and carries it, the one after confirms it: the default is
# two intervals, each with its jitter, plus 15 minutes.
# opt_out_bound_seconds = 2820

[daemon]
metrics_host = "127.0.0.1"    # /healthz and /metrics (Prometheus text)
metrics_port = 9464

[ctct]
client_id = "YOUR-API-KEY"    # the application's API key (OAuth client id)
token_file = "tokens.json"    # written by `ccsync auth login`, mode 0600, refreshed in place
# base_url = "https://api.cc.email/v3"
# token_url = "https://authz.constantcontact.com/oauth2/default/v1/token"
# authorize_url = "https://authz.constantcontact.com/oauth2/default/v1/authorize"
# device_authorize_url = "https://authz.constantcontact.com/oauth2/default/v1/device/authorize"
# redirect_uri = "https://localhost/ccsync/callback"
# scopes = ["contact_data", "campaign_data", "offline_access"]
# overlap_seconds = 300         # look-back on incremental fetches (boundaries are undocumented)
# requests_per_second = 4       # the API's limit per application key
# daily_budget = 10000          # requests per UTC day for this key
# tracking_reserve = 2000       # tracking stops when fewer requests than this remain today
# tracking = true
# tracking_after_days = 90      # the campaigns whose tracking is read: updated since then
# tracking_recheck_hours = 24   # a report whose counts did not move is read again after this
# connect_timeout = 10
# read_timeout = 60
# retries = 5                   # for 5xx, timeouts, resets (jittered exponential backoff)
# backoff_base = 0.5
# backoff_max = 30
# refresh_margin_seconds = 300  # refresh the access token this long before it expires
# page_size = 500
# activity_poll_interval = 1     # the first wait before polling bulk activities; doubles ...
# activity_poll_max = 30         # ... up to this
# activity_timeout = 900
# import_list_id = "..."        # the list new contacts join when no mapped list applies
#                               # (Constant Contact imports need at least one list): a
#                               # list of its own, which no [[lists]] entry maps

[policy]
# Opt-out always wins, in both directions, and is not configurable: ccsync never
# re-subscribes anyone and never adds an opted-out contact to a list (an opted-out
# contact's list memberships are left as they are, in both stores).
source_of_record = "app"      # whose profile fields win: "app" or "ctct"
# field_sources = { job_title = "ctct" }   # per-field overrides ("email" too)
fields = ["first_name", "last_name", "company_name", "job_title"]
create_in_ctct = true         # app contacts missing in Constant Contact are created there
create_in_app = true          # Constant Contact contacts missing in the app are created there
delete_ctct_to_app = false    # deletions made in Constant Contact reach the app
delete_app_to_ctct = false    # deletions made in the app reach Constant Contact

# List mapping: a Constant Contact list (id or name) and the app's list (key or name) that
# hold the same people; "source" says whose membership wins when they disagree.
[[lists]]
ctct = "Newsletter"
app = "Newsletter"
source = "app"

# The application's database and how its schema maps to contacts (docs/appdb.md has every
# option). This mapping fits the bundled sample CRM; edit it to fit yours, then run
# `ccsync appdb check` to compare it with the live schema.
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("init", help="write a commented config file")
    p.add_argument("path", type=Path, nargs="?", default=Path("ccsync.toml"))
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(handler=_init)


def template() -> str:
    return TEMPLATE + sample_config_toml("sqlite", "app.db")


async def _init(args: argparse.Namespace) -> int:
    if args.path.exists() and not args.force:
        print(f"ccsync: error: {args.path} exists (use --force to overwrite)", file=sys.stderr)
        return 2
    args.path.write_text(template())
    print(f"wrote {args.path}: edit [ctct] and [appdb], then `ccsync auth login` and `ccsync sync`")
    return 0
