"""Who owns an embedded chDB directory: a pid-file lock the sink takes before it opens the directory.

chDB lets one process open a directory. The owner holds an ``flock`` on ``costplane-owner.lock`` for its whole
life (the kernel drops it when the process dies, even on SIGKILL) and writes ``costplane-owner.json`` with its
pid and, when it serves one, the URL of its HTTP API. Other processes (``costplane report``, ``costplane dev
status``) read that file to find out whether to open the directory themselves or ask the owner's API instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from costplane.streams.sink.errors import DirectoryOwned

OWNER_FILE = "costplane-owner.json"
LOCK_FILE = "costplane-owner.lock"


@dataclass(frozen=True, slots=True)
class Owner:
    """The live process holding a directory."""

    pid: int
    api_url: str | None


def _lock_is_held(path: Path) -> bool:
    """True when some process holds the flock (probing takes and releases it at once)."""
    lock_path = path / LOCK_FILE
    if not lock_path.exists():
        return False
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return False


def current_owner(path: Path) -> Owner | None:
    """The other live process owning ``path``, or None (no owner, a dead owner, or this very process)."""
    try:
        data = json.loads((path / OWNER_FILE).read_text())
        pid = int(data["pid"])
        api_url = data.get("api_url")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if pid == os.getpid() or not _lock_is_held(path):
        return None
    return Owner(pid=pid, api_url=str(api_url) if api_url else None)


class DirectoryLock:
    """Exclusive ownership of a chDB directory by this process; release() or process death frees it."""

    def __init__(self, path: Path, handle: IO[str]) -> None:
        self.path = path
        self._handle: IO[str] | None = handle

    @classmethod
    def acquire(cls, path: Path, api_url: str | None = None) -> DirectoryLock:
        """Take the lock or raise :class:`DirectoryOwned` naming the owner (and its API, to query it there)."""
        path.mkdir(parents=True, exist_ok=True)
        handle = open(path / LOCK_FILE, "a+")  # noqa: SIM115 - held open for the lock's lifetime
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            owner = current_owner(path)
            raise DirectoryOwned(str(path), owner.pid if owner else -1, owner.api_url if owner else None) from None
        lock = cls(path, handle)
        lock.set_api_url(api_url)
        return lock

    def set_api_url(self, api_url: str | None) -> None:
        """Publish (or change) the URL where this owner serves reports."""
        tmp = self.path / (OWNER_FILE + ".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "api_url": api_url, "since": time.time()}))
        os.replace(tmp, self.path / OWNER_FILE)

    def release(self) -> None:
        if self._handle is None:
            return
        with contextlib.suppress(OSError):
            (self.path / OWNER_FILE).unlink()
        fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
        self._handle.close()
        self._handle = None

    def __enter__(self) -> DirectoryLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
