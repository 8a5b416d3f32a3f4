"""Open a ClickHouse client from settings: embedded chDB by directory, or a server by URL.

Same code path after opening: everything else in the sink takes a client and a database name.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from costplane.config import ClickHouseSettings
from costplane.streams.sink.errors import SinkUnavailable


def open_client(settings: ClickHouseSettings, create_database: bool = True) -> Any:
    """A clickhouse-connect client (``chdb:///abs/path`` or ``host=…``); creates the database when asked.

    Embedded: only one process may open a directory, and only after any fork — take a
    :class:`~costplane.streams.sink.ownership.DirectoryLock` first when this process is meant to own it.
    """
    import clickhouse_connect

    try:
        if settings.url is None:
            settings.chdb_path.mkdir(parents=True, exist_ok=True)
            client = clickhouse_connect.get_client(dsn=f"chdb://{settings.chdb_path}")
        else:
            url = urlparse(settings.url)
            password = settings.password.get_secret_value() if settings.password else (url.password or "")
            client = clickhouse_connect.get_client(
                host=url.hostname or "localhost",
                port=url.port or (8443 if url.scheme == "https" else 8123),
                username=url.username or "default",
                password=password,
                secure=url.scheme == "https",
            )
        if create_database:
            client.command(f"CREATE DATABASE IF NOT EXISTS {settings.database}")
    except Exception as exc:  # noqa: BLE001 - any driver/network failure here means "not reachable now"
        raise SinkUnavailable(f"cannot open ClickHouse at {settings.dsn}: {exc}") from exc
    return client
