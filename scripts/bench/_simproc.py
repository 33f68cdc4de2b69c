"""A simulator in its own process (``ccsync simulator serve``) for benchmarks, so the server
and the engine each have a core as they would in production; driven through its admin API."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
from typing import IO, Any

import aiohttp

from engine.cli._demo_setup import IMPORT_LIST, IMPORT_LIST_DESCRIPTION, SimulatorAccess

__all__ = ["SimProcess", "stat_cpu_seconds"]


def _die_with_parent() -> None:
    """(In the child, Linux) SIGTERM when the benchmark that started it dies, even by SIGKILL:
    a killed benchmark must not leave a simulator of a million contacts behind."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def stat_cpu_seconds(path: str) -> float:
    """User + system CPU seconds from a ``/proc/.../stat`` file (a process's or a thread's)."""
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()  # (the name, in parentheses, may hold spaces)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _drain(stream: IO[str]) -> None:
    for _ in stream:
        pass


class SimProcess:
    def __init__(self, contacts: int, *, seed: int = 7, lists: int = 6, campaigns: int = 0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "simulator", "serve", "--port", "0",
             "--contacts", str(contacts), "--campaigns", str(campaigns), "--seed", str(seed),
             "--lists", str(lists)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            preexec_fn=_die_with_parent,
        )  # fmt: skip
        assert self.proc.stdout is not None
        self.info: dict[str, str] = {}
        while "contacts" not in self.info:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("the simulator did not start")
            key, _, value = line.partition(":")
            self.info[key.strip()] = value.strip()
        # Read on (and drop) what it prints after that: its log lines, a fault each when faults
        # are set. A pipe nobody reads fills, and the simulator then blocks mid-request.
        threading.Thread(target=_drain, args=(self.proc.stdout,), daemon=True).start()
        self.base_url = self.info["base_url"]
        self.root_url = self.base_url.removesuffix("/v3")

    async def admin(self, method: str, path: str, body: object = None) -> Any:
        async with (
            aiohttp.ClientSession() as s,
            s.request(method, f"{self.root_url}/__admin/{path}", json=body) as resp,
        ):
            resp.raise_for_status()
            return await resp.json() if resp.content_type == "application/json" else None

    async def access(self) -> SimulatorAccess:
        tokens = await self.admin("POST", "tokens")
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        async with (
            aiohttp.ClientSession(headers=headers) as s,
            s.get(f"{self.base_url}/contact_lists?limit=100") as resp,
        ):
            lists = (await resp.json())["lists"]
        import_list = next((x["list_id"] for x in lists if x["name"] == IMPORT_LIST), None)
        if import_list is None:
            async with (
                aiohttp.ClientSession(headers=headers) as s,
                s.post(
                    f"{self.base_url}/contact_lists",
                    json={"name": IMPORT_LIST, "description": IMPORT_LIST_DESCRIPTION},
                ) as resp,
            ):
                resp.raise_for_status()
                import_list = (await resp.json())["list_id"]
        return SimulatorAccess(
            base_url=self.base_url,
            token_url=self.info["token_url"],
            client_id=self.info["client_id"],
            access_token=tokens["access_token"],
            refresh_token=tokens.get("refresh_token"),
            expires_in=int(tokens.get("expires_in", 86400)),
            import_list_id=import_list,
        )

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the simulator's process has used so far."""
        return stat_cpu_seconds(f"/proc/{self.proc.pid}/stat")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
