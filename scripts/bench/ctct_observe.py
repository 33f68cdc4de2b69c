"""Benchmark: observing Constant Contact contacts through the adapter, against the simulator.

1. Throughput (rate limits off): the adapter's full fetch of N contacts into normalised
   ContactRecords, beside a bare aiohttp + msgspec page loop over the same pages (same query,
   same simulator, same run). Each is run ``--repeat`` times, alternating; the best is kept.
2. Request counts (rate limits on, 4/s enforced by the simulator and paced by the adapter):
   a full sync must cost ceil(N/500) contact pages + 1 lists request; an incremental sync after
   k changes must cost pages in proportion to k (three sweeps) + 1 lists request.

    .venv/bin/python scripts/bench/ctct_observe.py [--contacts 100000] [--repeat 2]
                                                  [--skip-rate-limited]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _simproc import SimProcess

from adapters.constant_contact import CtctConfig, RateBudget, StoredTokens, TokenStore, open_ctct
from adapters.constant_contact.paging import INCLUDE
from engine.logging import configure_logging

# -- the baseline: what a bare client does per page -------------------------------------------


class _Email(msgspec.Struct):
    address: str
    permission_to_send: str | None = None
    updated_at: datetime | None = None


class _Contact(msgspec.Struct):
    contact_id: str
    email_address: _Email | None = None
    first_name: str | None = None
    last_name: str | None = None
    updated_at: datetime | None = None
    list_memberships: list[str] = []


class _Phone(msgspec.Struct):
    phone_number: str | None = None
    kind: str | None = None


class _Address(msgspec.Struct):
    kind: str | None = None
    street: str | None = None
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    country: str | None = None


class _CustomField(msgspec.Struct):
    custom_field_id: str
    value: str | None = None


class _FullEmail(msgspec.Struct):
    address: str
    permission_to_send: str | None = None
    updated_at: datetime | None = None
    opt_in_source: str | None = None
    opt_out_source: str | None = None
    opt_out_date: datetime | None = None
    opt_out_reason: str | None = None


class _FullContact(msgspec.Struct):
    """Every field the adapter reads, as a hand-written client would declare them."""

    contact_id: str
    email_address: _FullEmail | None = None
    first_name: str | None = None
    last_name: str | None = None
    job_title: str | None = None
    company_name: str | None = None
    birthday_month: int | None = None
    birthday_day: int | None = None
    anniversary: str | None = None
    updated_at: datetime | None = None
    deleted_at: str | None = None
    custom_fields: list[_CustomField] = []
    phone_numbers: list[_Phone] = []
    street_addresses: list[_Address] = []
    list_memberships: list[str] = []


class _Next(msgspec.Struct):
    href: str


class _Links(msgspec.Struct):
    next: _Next | None = None


class _Page(msgspec.Struct):
    contacts: list[_Contact] = []
    _links: _Links | None = None


class _FullPage(msgspec.Struct):
    contacts: list[_FullContact] = []
    _links: _Links | None = None


BASELINES = {
    "bare loop, narrow decode": msgspec.json.Decoder(_Page),
    "bare loop, full decode": msgspec.json.Decoder(_FullPage),
}


async def bare_loop(sim: Sim, token: str, decoder: msgspec.json.Decoder[Any]) -> int:
    """GET every page, decode with msgspec, follow _links.next: nothing else."""
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    count = 0
    async with aiohttp.ClientSession(headers=headers) as session:
        url: str | None = f"{sim.base_url}/contacts?status=all&include={INCLUDE}&limit=500"
        while url is not None:
            async with session.get(url) as resp:
                body = await resp.read()
            page = decoder.decode(body)
            count += len(page.contacts)
            nxt = page._links.next if page._links else None
            url = f"{sim.root_url}{nxt.href}" if nxt else None
    return count


class Sim(SimProcess):
    """A simulator in its own process (``ccsync simulator serve``), so server and client each
    have a core, as they would in production; driven through its admin API."""

    def __init__(self, contacts: int) -> None:
        super().__init__(contacts, seed=7, lists=8, campaigns=0)


def config(sim: Sim, token_file: Path, rps: float) -> CtctConfig:
    return CtctConfig.from_toml(
        {
            "client_id": sim.info["client_id"],
            "base_url": sim.base_url,
            "token_url": sim.info["token_url"],
            "token_file": str(token_file),
            "requests_per_second": rps,
            "tracking": False,
        },
        env={"CCSYNC_CTCT_CLIENT_SECRET": sim.info["client_secret"]},
    )


async def adapter_full(
    cfg: CtctConfig, bound: datetime, budget: RateBudget | None = None
) -> tuple[int, int, str, int]:
    """Full fetch through the adapter; (records + rejected, requests, resume token, retries)."""
    async with await open_ctct(cfg, budget) as ctct:
        n = 0
        token = ""
        async for page in ctct.observe_contacts(None, bound):
            n += len(page.contacts) + len(page.rejected)
            token = page.resume
        await ctct.observe_lists()
        return n, ctct.requests_made, token, ctct.client.retries_made


async def adapter_incremental(
    cfg: CtctConfig, resume: str, bound: datetime, budget: RateBudget
) -> tuple[int, int, str, int]:
    async with await open_ctct(cfg, budget) as ctct:
        n = 0
        async for page in ctct.observe_contacts(resume, bound):
            n += len(page.contacts) + len(page.rejected)
            resume = page.resume
        await ctct.observe_lists()
        return n, ctct.requests_made, resume, ctct.client.retries_made


def machine() -> str:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}"


async def main_async(args: argparse.Namespace) -> None:
    configure_logging(level="warning")  # as in production: no per-request debug lines
    sim = Sim(args.contacts)
    tmp = Path(tempfile.mkdtemp(prefix="ctct-bench-"))
    try:
        token_file = tmp / "tokens.json"
        access = sim.info["access_token"]
        TokenStore(token_file).save(
            StoredTokens(access_token=access, refresh_token=sim.info["refresh_token"])
        )
        print(f"machine: {machine()}")
        print(f"simulator: {sim.info['contacts']}, rate limits off, its own process")

        fast = config(sim, token_file, 1000)
        wall = dict.fromkeys([*BASELINES, "adapter"], math.inf)
        cpu = dict(wall)
        n_total = 0
        for _ in range(args.repeat):  # alternate, keep each one's best
            for name, decoder in BASELINES.items():
                t0, c0 = time.perf_counter(), time.process_time()
                n_total = await bare_loop(sim, access, decoder)
                wall[name] = min(wall[name], time.perf_counter() - t0)
                cpu[name] = min(cpu[name], time.process_time() - c0)
            t0, c0 = time.perf_counter(), time.process_time()
            got, _, _, _ = await adapter_full(fast, datetime.now(UTC))
            wall["adapter"] = min(wall["adapter"], time.perf_counter() - t0)
            cpu["adapter"] = min(cpu["adapter"], time.process_time() - c0)
            assert got == n_total, (got, n_total)
        for name in wall:
            ratio = (
                ""
                if name == "adapter"
                else f"   adapter/this {wall[name] / wall['adapter']:6.1%}"
                f" (CPU {cpu[name] / cpu['adapter']:5.1%})"
            )
            print(
                f"{name:26s}: {wall[name]:6.2f} s {n_total / wall[name]:9,.0f} contacts/s"
                f"   client CPU {cpu[name]:5.2f} s{ratio}"
            )
        print("target: adapter >= 50% of the bare loop's throughput (wall; CPU in brackets)")
        print(f"load average after        : {os.getloadavg()[0]:.2f} (other work on the cores)")

        if args.skip_rate_limited:
            return
        await sim.admin("PUT", "rate_limits", {"enabled": True})
        paced = config(sim, token_file, 4)
        budget = RateBudget(4, 10_000)  # one per application key, shared by every run
        t0 = time.perf_counter()
        got, requests, token, retried = await adapter_full(paced, datetime.now(UTC), budget)
        pages = math.ceil(n_total / 500)
        print(
            f"full sync, rate limits on: {requests} requests ({retried} retried 429s) in "
            f"{time.perf_counter() - t0:.1f} s for {got} contacts "
            f"(ceil(N/500) = {pages} pages + 1 lists = {pages + 1})"
        )
        for k in args.changes:
            await sim.admin("POST", "world/step", {"n": k})
            got, requests, token, retried = await adapter_incremental(
                paced, token, datetime.now(UTC), budget
            )
            print(
                f"incremental after {k:5d} world changes: {requests} requests ({retried} retried "
                f"429s) for {got} records (3 sweeps x ceil(changed/500) pages + 1 lists)"
            )
    finally:
        sim.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--changes", type=int, nargs="*", default=[50, 2000])
    parser.add_argument("--skip-rate-limited", action="store_true")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
