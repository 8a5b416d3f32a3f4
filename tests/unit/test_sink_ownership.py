"""The pid-file lock on an embedded chDB directory, held by another process and released by its death."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from costplane.streams.sink.errors import DirectoryOwned
from costplane.streams.sink.ownership import OWNER_FILE, DirectoryLock, current_owner

HOLDER = (
    "import sys, time\n"
    "from pathlib import Path\n"
    "from costplane.streams.sink.ownership import DirectoryLock\n"
    "lock = DirectoryLock.acquire(Path(sys.argv[1]), api_url='http://127.0.0.1:6066')\n"
    "print('locked', flush=True)\n"
    "time.sleep(60)\n"
)


def test_lock_excludes_others_names_the_owner_and_dies_with_it(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        owner = current_owner(tmp_path)
        assert owner is not None and owner.pid == holder.pid and owner.api_url == "http://127.0.0.1:6066"
        with pytest.raises(DirectoryOwned) as info:
            DirectoryLock.acquire(tmp_path)
        assert info.value.pid == holder.pid
    finally:
        holder.kill()
        holder.wait()
    # SIGKILL leaves the owner file behind, but the kernel released the flock: no owner.
    assert (tmp_path / OWNER_FILE).exists()
    assert current_owner(tmp_path) is None
    with DirectoryLock.acquire(tmp_path) as lock:
        assert current_owner(tmp_path) is None  # this very process is not "another owner"
        lock.set_api_url("http://h:1")
    assert not (tmp_path / OWNER_FILE).exists()
