"""Lay out a working ccsync folder against a simulator and a sample app database.

Used by ``ccsync demo`` and by the end-to-end tests, so both run the same wiring a user gets.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec

from adapters.appdb import create_sample_app, sample_config_toml
from adapters.constant_contact import StoredTokens
from adapters.constant_contact.tokens import write_private_file
from adapters.ctct_simulator import Simulator

__all__ = ["DEMO_LISTS", "prepare_folder"]

# The sample app's lists and the simulator's seeded lists they correspond to.
DEMO_LISTS = (
    ("List 1", "Newsletter", "app"),
    ("List 2", "Customers", "ctct"),
    ("List 3", "Events", "app"),
)


async def prepare_folder(
    folder: Path, sim: Simulator, *, app_contacts: int = 50, seed: int = 1, tracking: bool = True
) -> Path:
    """Create the sample app database, a token file and ``ccsync.toml`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    app_db = folder / "app.db"
    await create_sample_app(
        str(app_db), contacts=app_contacts, seed=seed, lists=[app for _, app, _ in DEMO_LISTS]
    )
    tokens = sim.issue_tokens()
    stored = StoredTokens.issued(
        tokens.access_token,
        tokens.refresh_token,
        tokens.expires_in,
        datetime.now(UTC) - timedelta(seconds=1),
    )
    write_private_file(folder / "tokens.json", msgspec.json.encode(stored))
    # Imports need a list: contacts created in Constant Contact with no mapped list join "List 1".
    default_list = next(lst.list_id for lst in sim.account.lists.values() if lst.name == "List 1")
    lists = "".join(
        f'\n[[lists]]\nctct = "{c}"\napp = "{a}"\nsource = "{src}"\n' for c, a, src in DEMO_LISTS
    )
    text = f"""# ccsync configuration (written by ccsync demo; see `ccsync init` for every option)

[log]
path = "ccsync.db"

[sync]
interval_seconds = 60
jitter_seconds = 5
tracking = {str(tracking).lower()}

[ctct]
client_id = "{sim.client_id}"
base_url = "{sim.base_url}"
token_url = "{sim.token_url}"
token_file = "tokens.json"
requests_per_second = 1000
activity_poll_interval = 0.05
backoff_base = 0.05
import_list_id = "{default_list}"

[policy]
source_of_record = "app"
{lists}
{sample_config_toml("sqlite", "app.db")}"""
    config = folder / "ccsync.toml"
    config.write_text(text)
    return config
