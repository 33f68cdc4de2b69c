"""One writer per log: an advisory lock file beside it that names its holder."""

from __future__ import annotations

import fcntl
import os
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path

from engine.errors import FatalError, LogLockedError

__all__ = ["WriterLock", "prepare_log_file"]


class WriterLock:
    """An exclusive flock on ``<log>.lock``, released when the process exits, however it exits.

    The kernel drops the lock with the process, so a SIGKILLed writer never leaves a stale lock.
    The file's content only tells the next would-be writer who holds it.
    """

    def __init__(self, log_path: Path) -> None:
        self.path = log_path.with_name(log_path.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise LogLockedError naming the holder; never waits."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise LogLockedError(
                f"the log {self.path.with_suffix('')} is open for writing by {holder}; "
                "only one writer may hold it (stop that process, or use a read-only command)"
            ) from None
        started = datetime.now(UTC).isoformat(timespec="seconds")
        cmd = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))
        info = f"pid {os.getpid()} on {socket.gethostname()} since {started} ({cmd})".encode()
        # Write, then cut the previous holder's longer text: a would-be writer reading at the
        # same moment sees our pid, never an empty file.
        os.pwrite(fd, info, 0)
        os.ftruncate(fd, len(info))
        self._fd = fd

    def release(self) -> None:
        """Let the next writer in (safe to call twice)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def prepare_log_file(p: Path, writer: bool) -> WriterLock | None:
    """Take the writer lock and create the file with mode 0600; or check a reader's file exists.

    Plain syscalls on a local file, done before the connection's thread exists.
    """
    if not writer:
        if not p.exists():
            raise FatalError(f"no event log at {p}")
        return None
    lock = WriterLock(p)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
        if not p.exists():
            # SQLite gives the -wal and -shm files the main file's mode; fchmod because the
            # umask could otherwise change what O_CREAT asked for.
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.fchmod(fd, 0o600)
            os.close(fd)
    except OSError as exc:
        lock.release()
        raise FatalError(f"cannot open the event log {p} for writing: {exc}") from exc
    return lock
