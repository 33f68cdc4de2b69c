"""Benchmark: the simulator serving a 1,000,000-contact account to a sequential client.

Runs the simulator (`ccsync simulator serve`) in its own process, pages through every contact
with limit=500 twice (cold: JSON rendered on first touch; warm: cached bytes), and measures
the same client against a bare aiohttp server of precomputed pages (the baseline: what the
HTTP stack alone allows here). Prints pages/s and contacts/s, the ratio to the baseline, the
server's resident memory and its start-up time.

    .venv/bin/python scripts/bench/simulator.py [--contacts 1000000] [--baseline-pages 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--baseline-pages", type=int, default=2000)
    parser.add_argument("--baseline-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_server:
        baseline_server(args.baseline_pages)
        return

    py = sys.executable
    print(f"machine: {os.cpu_count()} CPUs; python {sys.version.split()[0]}")
    base, binfo, _ = _start(
        [py, __file__, "--baseline-server", "--baseline-pages", str(args.baseline_pages)]
    )
    try:
        b_pages, b_contacts, b_secs = asyncio.run(
            _scan(binfo["base_url"][:-3], "x", "/v3/contacts")
        )
    finally:
        _stop(base)

    cmd = [py, "-m", "engine.cli", "simulator", "serve", "--port", "0",
           "--contacts", str(args.contacts), "--seed", "1", "--campaigns", "1"]  # fmt: skip
    runs: list[tuple[str, tuple[int, int, float]]] = []
    starts: list[str] = []
    for label, extra in (("prerendered", []), ("no prerender", ["--no-prerender"])):
        sim, info, startup = _start(cmd + extra)
        try:
            rss_start = _rss_mb(sim.pid)
            root = info["base_url"][:-3]
            first = asyncio.run(_scan(root, info["access_token"], "/v3/contacts?limit=500"))
            second = asyncio.run(_scan(root, info["access_token"], "/v3/contacts?limit=500"))
            rss_end = _rss_mb(sim.pid)
        finally:
            _stop(sim)
        runs += [(f"{label}, 1st scan", first), (f"{label}, 2nd scan", second)]
        starts.append(f"{label}: start-up {startup:.1f} s, RSS {rss_start:,.0f} MB after start, "
                      f"{rss_end:,.0f} MB after two full scans")  # fmt: skip

    b_rate = b_contacts / b_secs
    print(f"simulator with {args.contacts:,} contacts")
    for line in starts:
        print(f"  {line}")
    head = ("run", "pages", "contacts", "pages/s", "contacts/s", "vs baseline")
    print(f"{head[0]:<36}{head[1]:>8}{head[2]:>11}{head[3]:>10}{head[4]:>13}{head[5]:>13}")
    rows = [
        ("baseline (bare aiohttp)", b_pages, b_contacts, b_secs),
        *((f"simulator, {name}", *figures) for name, figures in runs),
    ]
    for name, pages, contacts, secs in rows:
        rate = contacts / secs
        ratio = rate / b_rate
        print(
            f"{name:<36}{pages:>8}{contacts:>11,}{pages / secs:>10.1f}{rate:>13,.0f}{ratio:>12.2f}x"
        )


if __name__ == "__main__":
    main()
