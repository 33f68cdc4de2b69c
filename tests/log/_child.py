"""A separate process that writes to a log, for the lock and crash tests.

python -m tests.log._child hold  LOG   # open as writer, print "ready", wait for stdin EOF
python -m tests.log._child churn LOG N # append batches of N events forever, printing the
                                       # number of committed batches after each commit
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading

from engine.log import EventLog
from tests.log.samples import membership, new


async def hold(path: str) -> None:
    async with await EventLog.open(path) as log:
        await log.append([new(membership(0))])
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def churn(path: str, size: int, kill_after_ms: float) -> None:
    async with await EventLog.open(path) as log:
        done = (await log.head()).position // size
        print(f"ready {done}", flush=True)
        # From another thread, so the kill can land inside SQLite's commit on aiosqlite's
        # thread as well as anywhere in Python: no cleanup code of ours runs.
        threading.Timer(kill_after_ms / 1000, os.kill, (os.getpid(), signal.SIGKILL)).start()
        while True:
            # Streams that grow across batches, and a checkpoint in the same transaction.
            batch = [new(membership(i % 37, f"list-{done}-{i}")) for i in range(size)]
            await log.append(batch, checkpoints={"churn": str(done + 1)})
            done += 1
            print(done, flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "hold":
        asyncio.run(hold(sys.argv[2]))
    else:
        asyncio.run(churn(sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
