"""One call for the worker: own the directory (embedded), open the client, migrate, build the sink.

Call it in the process that will write, after any fork (chDB). Keep the returned object for the process's life:
its ``client`` also serves ``/api/report`` through :func:`costplane.streams.sink.query.answer_api`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from costplane.config import ClickHouseSettings
from costplane.streams.sink.client import open_client
from costplane.streams.sink.migrations import migrate
from costplane.streams.sink.ownership import DirectoryLock
from costplane.streams.sink.query import answer_api
from costplane.streams.sink.sink import ClickHouseSink, CommitFn, FlushPolicy
from costplane.streams.sink.writer import BatchWriter


@dataclass
class OpenSink:
    """The sink with what it holds: the client and, for embedded chDB, the directory lock."""

    sink: ClickHouseSink
    client: Any
    settings: ClickHouseSettings
    lock: DirectoryLock | None

    def report(self, query_string: str) -> Any:
        """What ``GET /api/report?<query_string>`` returns (raises ReportError on a bad request → HTTP 400)."""
        return answer_api(self.client, query_string, self.settings.database, self.settings.raw_ttl_days)

    def close(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def open_sink(
    settings: ClickHouseSettings,
    commit: CommitFn,
    *,
    policy: FlushPolicy | None = None,
    api_url: str | None = None,
    clock: Callable[[], float] | None = None,
) -> OpenSink:
    """Lock (embedded only; raises DirectoryOwned), open, migrate, and return a ready sink.

    ``api_url`` is written into the owner file so ``costplane report`` run elsewhere asks this process.
    Raises :class:`~costplane.streams.sink.errors.SinkUnavailable` when ClickHouse cannot be reached.
    """
    lock = DirectoryLock.acquire(settings.chdb_path, api_url=api_url) if settings.url is None else None
    try:
        client = open_client(settings)
        migrate(client, settings.database, settings.raw_ttl_days)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    writer = BatchWriter(client, settings.database)
    # Against a server several sinks may share the database (partitions spread by the consumer group).
    shared = settings.url is not None
    sink = (
        ClickHouseSink(writer, commit, policy, shared=shared)
        if clock is None
        else ClickHouseSink(writer, commit, policy, clock, shared=shared)
    )
    return OpenSink(sink=sink, client=client, settings=settings, lock=lock)
