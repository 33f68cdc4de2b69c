"""Benchmark: the simulator serving a 1,000,000-contact account.

1. In process, for each ``--contacts`` size (no HTTP: the work a GET /contacts handler does):
   a. an incremental cycle's three listings (``updated_after``, ``optout_after``,
      ``status=deleted&updated_after``, the engine's include-set, limit 500, every page) after
      1% of the contacts changed, answered by a scan of every contact (the baseline: the code
      before the time index) and from the time index, in the same run; the answers must be equal;
   b. a full listing's pages (``status=all`` and the engine's include-set): each contact
      rendered whole (the baseline: the code before) against the default JSON plus the
      include-set's members rendered (twice: the second pass has the default JSON cached).
2. Over HTTP (``ccsync simulator serve`` in its own process, largest size only): pages through
   every contact with limit=500, default and with the engine's include-set, cold then warm,
   beside a bare aiohttp server of precomputed pages (what the HTTP stack alone allows here).

    .venv/bin/python scripts/bench/simulator.py [--contacts 100000,1000000] [--skip-http]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

ROOT = Path(__file__).resolve().parents[2]


class _Next(msgspec.Struct):
    href: str


class _Links(msgspec.Struct):
    next: _Next | None = None


class _Page(msgspec.Struct):
    contacts: list[msgspec.Raw]
    _links: _Links | None = msgspec.field(default=None, name="_links")


_decode = msgspec.json.Decoder(_Page).decode


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _scan(
    root: str, token: str, first: str, max_pages: int | None = None
) -> tuple[int, int, float]:
    """Follow next links sequentially; returns (pages, contacts, seconds)."""
    headers = {"Authorization": f"Bearer {token}"}
    pages = contacts = 0
    url: str | None = root + first
    async with aiohttp.ClientSession(headers=headers) as session:
        t0 = time.perf_counter()
        while url is not None and (max_pages is None or pages < max_pages):
            async with session.get(url) as resp:
                if resp.status != 200:
                    raise SystemExit(f"{url}: HTTP {resp.status}: {(await resp.read())[:200]!r}")
                page = _decode(await resp.read())
            pages += 1
            contacts += len(page.contacts)
            nxt = page._links.next if page._links is not None else None
            url = root + nxt.href if nxt is not None else None
        return pages, contacts, time.perf_counter() - t0


def _start(cmd: list[str]) -> tuple[subprocess.Popen[str], dict[str, str], float]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT
    )
    assert proc.stdout is not None
    info: dict[str, str] = {}
    for line in proc.stdout:
        key, _, value = line.partition(":")
        info[key.strip()] = value.strip()
        if key in ("contacts", "ready"):
            break
    else:
        raise SystemExit(f"{cmd[0]} exited before it was ready")
    return proc, info, time.perf_counter() - t0


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.wait(timeout=60)
    if proc.stdout is not None:
        proc.stdout.close()


def baseline_server(pages: int) -> None:
    """A bare aiohttp server of precomputed /v3/contacts pages with the same bytes."""
    from aiohttp import web

    from adapters.ctct_simulator.account import Account
    from adapters.ctct_simulator.clock import SimClock
    from adapters.ctct_simulator.seed import seed_account

    account = Account(SimClock(), 1)
    seed_account(account, 500 * 40, 8, 1)
    live = [c for c in account.contacts if c.deleted_at is None]
    bodies = []
    for i in range(pages):
        chunk = [live[(i * 500 + k) % len(live)].encoded(0) for k in range(500)]
        tail = (
            b',"_links":{"next":{"href":"/v3/contacts?cursor=%d"}}' % (i + 1)
            if i + 1 < pages
            else b""
        )
        bodies.append(b'{"contacts":[' + b",".join(chunk) + b"]" + tail + b"}")

    async def handler(request: web.Request) -> web.Response:
        return web.Response(
            body=bodies[int(request.query.get("cursor", "0"))], content_type="application/json"
        )

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/v3/contacts", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(f"base_url: http://127.0.0.1:{port}/v3", flush=True)
        print("ready: 1", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


INCLUDE = "custom_fields,list_memberships,phone_numbers,street_addresses,notes,taggings"


def _pages(
    account: Any, params: dict[str, str], serve: Callable[[Any, Any], bytes]
) -> tuple[int, list[int], float]:
    """Every page of one listing as the handler answers it: (pages, seqs served, seconds)."""
    from adapters.ctct_simulator.query import parse_query, scan

    t0 = time.perf_counter()
    query, after = parse_query(params)
    pages, seqs = 0, list[int]()
    while True:
        page, nxt = scan(account, query, after)
        serve(page, query)
        pages += 1
        seqs.extend(c.seq for c in page)
        if nxt is None:
            return pages, seqs, time.perf_counter() - t0
        after = nxt


def in_process(n: int) -> None:
    """Part 1 at one size: the incremental cycle's listings, scan against index; and a full
    listing's page rendering, whole against core-plus-members."""
    from adapters.ctct_simulator.account import Account
    from adapters.ctct_simulator.clock import SimClock, iso_ms
    from adapters.ctct_simulator.contact import Contact
    from adapters.ctct_simulator.seed import seed_account
    from adapters.ctct_simulator.tracking import Tracking
    from adapters.ctct_simulator.world import World

    encode = msgspec.json.Encoder().encode
    t0 = time.perf_counter()
    account = Account(SimClock(), 1)
    seed_account(account, n, 6, 1)
    seeded = time.perf_counter() - t0
    t0 = time.perf_counter()
    for c in account.contacts:
        c.encoded(0)  # what the server's prerender does at start
    prerender = time.perf_counter() - t0
    print(f"\n{n:,} contacts: seeded (and indexed) in {seeded:.1f} s, "
          f"default JSON prerendered in {prerender:.1f} s")  # fmt: skip

    def body(page: list[Contact], query: Any) -> bytes:
        return b",".join([c.encoded(query.include) for c in page])

    # a. the incremental cycle, after 1% of the contacts changed
    account.clock.advance(seconds=60)
    since = iso_ms(account.clock.now_ms())
    account.clock.advance(seconds=1)
    World(account, Tracking(account, 1), 1).step(n // 100)
    cycle = (
        {"updated_after": since},
        {"optout_after": since},
        {"status": "deleted", "updated_after": since},
    )
    print(f"  a. incremental cycle's listings after {n // 100:,} changes "
          "(include-set, limit 500, every page; best of 3)")  # fmt: skip
    for params in cycle:
        full = {**params, "include": INCLUDE, "limit": "500", "include_count": "true"}
        timings: dict[str, float] = {}
        answers: dict[str, list[int]] = {}
        for label, share in (("scan", 1 << 62), ("index", 8)):
            account.index.scan_share = share
            best = float("inf")
            for _ in range(3):
                account.index.forget()  # each try from a cold index
                _, seqs, secs = _pages(account, full, body)
                best = min(best, secs)
            timings[label], answers[label] = best, seqs
        if answers["scan"] != answers["index"]:
            raise SystemExit(f"{params}: the index answered differently from the scan")
        query = "&".join(f"{k}={v if k == 'status' else '<t>'}" for k, v in params.items())
        print(f"     {query:<34} {len(answers['index']):>6} contacts   scan "
              f"{timings['scan'] * 1000:8.1f} ms   index {timings['index'] * 1000:7.2f} ms   "
              f"{timings['scan'] / timings['index']:6.0f}x")  # fmt: skip

    # b. a full listing's pages with the engine's include-set
    full = {"status": "all", "include": INCLUDE, "limit": "500"}
    mask = 63

    def whole(page: list[Contact], query: Any) -> bytes:
        return b",".join([encode(c.render(mask)) for c in page])  # the code before: all of it

    rows = []
    _, seqs, secs = _pages(account, full, whole)
    rows.append(("whole contact rendered (before)", secs))
    _, _, secs = _pages(account, full, body)
    rows.append(("default JSON + members, cold", secs))
    _, _, secs = _pages(account, full, body)
    rows.append(("default JSON cached + members", secs))
    print(f"  b. full listing, status=all + include-set: {len(seqs):,} contacts")
    for label, secs in rows:
        print(f"     {label:<34} {secs:7.2f} s  {len(seqs) / secs:>11,.0f} contacts/s  "
              f"{rows[0][1] / secs:5.1f}x")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", default="100000,1000000", help="sizes, comma-separated")
    parser.add_argument("--baseline-pages", type=int, default=2000)
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--baseline-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_server:
        baseline_server(args.baseline_pages)
        return
    sizes = [int(x) for x in args.contacts.split(",")]
    print(f"machine: {os.cpu_count()} CPUs; python {sys.version.split()[0]}; "
          f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    for n in sizes:
        in_process(n)
    if not args.skip_http:
        over_http(max(sizes), args.baseline_pages)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


def over_http(n: int, baseline_pages: int) -> None:
    """Part 2: a sequential client against the simulator process and the bare server."""
    py = sys.executable
    base, binfo, _ = _start(
        [py, __file__, "--baseline-server", "--baseline-pages", str(baseline_pages)]
    )
    try:
        b_pages, b_contacts, b_secs = asyncio.run(
            _scan(binfo["base_url"][:-3], "x", "/v3/contacts")
        )
    finally:
        _stop(base)

    cmd = [py, "-m", "engine.cli", "simulator", "serve", "--port", "0",
           "--contacts", str(n), "--seed", "1", "--campaigns", "1"]  # fmt: skip
    default = "/v3/contacts?limit=500"
    included = f"/v3/contacts?status=all&include={INCLUDE}&limit=500"
    runs: list[tuple[str, tuple[int, int, float]]] = []
    sim, info, startup = _start(cmd)
    try:
        rss_start = _rss_mb(sim.pid)
        root, token = info["base_url"][:-3], info["access_token"]
        for label, first in (
            ("default, 1st scan (prerendered)", default),
            ("default, 2nd scan", default),
            ("include-set, 1st scan", included),
            ("include-set, 2nd scan", included),
        ):
            runs.append((label, asyncio.run(_scan(root, token, first))))
        rss_end = _rss_mb(sim.pid)
    finally:
        _stop(sim)

    b_rate = b_contacts / b_secs
    print(f"\nover HTTP, simulator with {n:,} contacts: start-up {startup:.1f} s, RSS "
          f"{rss_start:,.0f} MB after start, {rss_end:,.0f} MB after the four scans")  # fmt: skip
    head = ("run", "pages", "contacts", "pages/s", "contacts/s", "vs baseline")
    print(f"{head[0]:<44}{head[1]:>8}{head[2]:>11}{head[3]:>10}{head[4]:>13}{head[5]:>13}")
    rows = [
        ("baseline (bare aiohttp, default JSON)", b_pages, b_contacts, b_secs),
        *((f"simulator, {name}", *figures) for name, figures in runs),
    ]
    for name, pages, contacts, secs in rows:
        rate = contacts / secs
        print(f"{name:<44}{pages:>8}{contacts:>11,}{pages / secs:>10.1f}{rate:>13,.0f}"
              f"{rate / b_rate:>12.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
