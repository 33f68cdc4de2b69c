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

__all__ = [
    "DEMO_LISTS",
    "IMPORT_LIST",
    "IMPORT_LIST_DESCRIPTION",
    "SimulatorAccess",
    "access_of",
    "prepare_folder",
]

# The sample app's lists and the simulator's seeded lists they correspond to.
DEMO_LISTS = (
    ("List 1", "Newsletter", "app"),
    ("List 2", "Customers", "ctct"),
    ("List 3", "Events", "app"),
)
# The Constant Contact list that contacts created with no mapped list join (an import must name
# a list): one of its own, which no [[lists]] entry maps (engine.cycle refuses a mapped one).
IMPORT_LIST = "Created by ccsync"
IMPORT_LIST_DESCRIPTION = "Contacts ccsync created from the app with no mapped list"


class SimulatorAccess(msgspec.Struct, frozen=True, kw_only=True):
    """How to reach a simulator: in this process, or one started with `ccsync simulator serve`."""

    base_url: str
    token_url: str
    client_id: str
    access_token: str
    refresh_token: str | None
    expires_in: int
    import_list_id: str  # the list contacts created with no mapped list join (IMPORT_LIST)


def access_of(sim: Simulator) -> SimulatorAccess:
    tokens = sim.issue_tokens()

    def import_list() -> str:
        for lst in sim.account.lists.values():
            if lst.name == IMPORT_LIST and lst.deleted_at is None:
                return lst.list_id
        return sim.account.add_list(IMPORT_LIST, IMPORT_LIST_DESCRIPTION).list_id

    default_list = sim.call(import_list)
    return SimulatorAccess(
        base_url=sim.base_url,
        token_url=sim.token_url,
        client_id=sim.client_id,
        access_token=tokens.access_token,
        refresh_token=tokens.refresh_token,
        expires_in=tokens.expires_in,
        import_list_id=default_list,
    )


async def prepare_folder(
    folder: Path,
    sim: Simulator | SimulatorAccess,
    *,
    app_contacts: int = 50,
    seed: int = 1,
    tracking: bool = True,
    overlap_seconds: float | None = None,
    daily_budget: int | None = None,
) -> Path:
    """Create the sample app database, a token file and ``ccsync.toml`` in ``folder``.

    ``overlap_seconds`` and ``daily_budget`` are for benchmarks: back-to-back cycles, and more
    requests in a day than a real application key's 10,000 (the simulator does not count them).
    """
    access = sim if isinstance(sim, SimulatorAccess) else access_of(sim)
    folder.mkdir(parents=True, exist_ok=True)
    app_db = folder / "app.db"
    await create_sample_app(
        str(app_db), contacts=app_contacts, seed=seed, lists=[app for _, app, _ in DEMO_LISTS]
    )
    stored = StoredTokens.issued(
        access.access_token,
        access.refresh_token,
        access.expires_in,
        datetime.now(UTC) - timedelta(seconds=1),
    )
    write_private_file(folder / "tokens.json", msgspec.json.encode(stored))
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
client_id = "{access.client_id}"
base_url = "{access.base_url}"
token_url = "{access.token_url}"
token_file = "tokens.json"
requests_per_second = 1000
activity_poll_interval = 0.05
backoff_base = 0.05
# Imports need a list: contacts created here with no mapped list join "{IMPORT_LIST}", a list
# of their own (a mapped list would gain them, then lose them again the next cycle).
import_list_id = "{access.import_list_id}"

[policy]
source_of_record = "app"
{lists}
{sample_config_toml("sqlite", "app.db")}"""
    if overlap_seconds is not None:  # look-back on both sides (benchmarks of back-to-back cycles)
        text = text.replace("[ctct]\n", f"[ctct]\noverlap_seconds = {overlap_seconds}\n", 1)
        text = text.replace("[appdb]\n", f"[appdb]\noverlap_seconds = {overlap_seconds}\n", 1)
    if daily_budget is not None:
        text = text.replace("[ctct]\n", f"[ctct]\ndaily_budget = {daily_budget}\n", 1)
    config = folder / "ccsync.toml"
    config.write_text(text)
    return config
