"""ClickHouse for the dev stack: embedded chDB in the stack's state directory, or a server by URL.

chDB is a library, not a server: a directory may be opened by one process only, and only after any fork. The
health check therefore runs ``SELECT 1`` in a short-lived child process, so the CLI never holds the directory
that a worker is about to open. When a running process already owns the directory (the sink's owner file),
the directory is reported as healthy and owned instead of being opened a second time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from costplane.config import ClickHouseSettings
from costplane.devstack.process import pid_alive

_PROBE = (
    "import sys, clickhouse_connect\n"
    "client = clickhouse_connect.get_client(dsn='chdb://' + sys.argv[1])\n"
    "print(client.query('SELECT 1').result_rows[0][0])\n"
)

OWNER_FILE = "costplane-owner.json"


def chdb_owner(path: Path) -> int | None:
    """Pid of the live process that owns an embedded chDB directory, if any."""
    try:
        data = json.loads((path / OWNER_FILE).read_text())
        pid = int(data["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pid if pid_alive(pid) else None


class ClickHouseTarget:
    """Embedded chDB directory or a ClickHouse server, as ClickHouseSettings say."""

    def __init__(self, settings: ClickHouseSettings) -> None:
        self.settings = settings

    @property
    def dsn(self) -> str:
        return self.settings.dsn

    @property
    def embedded(self) -> bool:
        return self.settings.url is None

    def prepare(self) -> None:
        if self.embedded:
            self.settings.chdb_path.mkdir(parents=True, exist_ok=True)

    def healthy(self, timeout_s: float = 60.0) -> bool:
        if not self.embedded:
            return self._server_select_one()
        if chdb_owner(self.settings.chdb_path) is not None:
            return True
        try:
            out = subprocess.run(  # noqa: S603
                [sys.executable, "-c", _PROBE, str(self.settings.chdb_path)],
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return False
        return out.returncode == 0 and out.stdout.strip().endswith("1")

    def _server_select_one(self) -> bool:
        try:
            import clickhouse_connect
        except ImportError:
            return False
        from urllib.parse import urlparse

        url = urlparse(self.settings.url or "")
        password = self.settings.password.get_secret_value() if self.settings.password else (url.password or "")
        try:
            client = clickhouse_connect.get_client(
                host=url.hostname or "localhost",
                port=url.port or 8123,
                username=url.username or "default",
                password=password,
                secure=url.scheme == "https",
                connect_timeout=3,
            )
            return bool(client.query("SELECT 1").result_rows[0][0] == 1)
        except Exception:  # noqa: BLE001 - any client/network failure means "not healthy"
            return False
