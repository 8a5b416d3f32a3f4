"""Typed sink errors, so the worker can tell "pause and retry" from "stop and tell a person"."""

from __future__ import annotations


class SinkError(RuntimeError):
    """Base of every error the sink raises on purpose."""


class SinkUnavailable(SinkError):
    """ClickHouse could not be reached or refused a statement transiently: retry the same flush later.

    Nothing is lost: the batch stays buffered, offsets were not committed, and the journal lets the retry
    finish or skip whatever the failed attempt already wrote.
    """


class MigrationError(SinkError):
    """A migration cannot be applied (changed checksum of an applied file, bad file name, failed statement)."""


class DirectoryOwned(SinkError):
    """An embedded chDB directory is owned by another live process (see :mod:`.ownership`)."""

    def __init__(self, path: str, pid: int, api_url: str | None) -> None:
        self.path = path
        self.pid = pid
        self.api_url = api_url
        super().__init__(f"chDB directory {path} is owned by process {pid}" + (f" (API {api_url})" if api_url else ""))
