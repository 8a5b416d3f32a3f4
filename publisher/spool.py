"""A durable, size-capped, append-only local spool for messages the broker could not take.

Why: "broker down" must mean *spooled*, not lost, and an app that exits while the broker is away must find its
data again on the next start. Layout: a directory of segment files ``seg-<seq>.spool``, each a run of records
``[u32 length][u32 crc32][payload]``; the payload holds key, headers and value. Segments are replayed oldest
first, so order is kept; a segment is deleted only after every record in it was acknowledged by the broker.

Durability (``fsync``):
* ``"roll"`` (default): the segment is fsynced when it is rolled and when the spool closes. A machine crash can
  lose at most the records of the open segment written since the last roll; a process crash loses nothing (the
  bytes are in the OS page cache).
* ``"always"``: fsync after every append — no loss on power failure, at the cost of one disk flush per batch.
* ``"never"``: leave it to the OS.

A torn record at the end of a segment (a crash in the middle of a write) is detected by its length or CRC and
dropped with a count; nothing after a bad record in that segment is trusted.

One process per directory: a spool holds an exclusive ``flock`` on ``<dir>/.lock`` while open, so two processes
(forked web workers, a CLI beside the app) never interleave records. :func:`open_spool` picks the first free
*slot* — the directory itself, then ``<dir>/slot-1``, ``slot-2``, … — so a restarted single-process app gets its
old slot back and replays it.
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

FsyncPolicy = Literal["roll", "always", "never"]
FullPolicy = Literal["drop_oldest", "refuse_newest"]
_HEAD = struct.Struct(">II")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class SpooledMessage:
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


class SpoolFull(RuntimeError):
    """The spool reached its size cap under the ``refuse_newest`` policy."""


class SpoolLocked(RuntimeError):
    """Another process has this spool directory open."""


def encode_record(msg: SpooledMessage) -> bytes:
    parts = [_U16.pack(len(msg.key)), msg.key, _U16.pack(len(msg.headers))]
    for name, value in msg.headers:
        raw = name.encode()
        parts += [_U16.pack(len(raw)), raw, _U32.pack(len(value)), value]
    parts += [_U32.pack(len(msg.value)), msg.value]
    payload = b"".join(parts)
    return _HEAD.pack(len(payload), zlib.crc32(payload)) + payload


def decode_payload(payload: bytes) -> SpooledMessage:
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(payload):
            raise ValueError("truncated spool payload")
        chunk = payload[pos : pos + n]
        pos += n
        return chunk

    key = take(_U16.unpack(take(2))[0])
    headers = []
    for _ in range(_U16.unpack(take(2))[0]):
        name = take(_U16.unpack(take(2))[0]).decode()
        headers.append((name, take(_U32.unpack(take(4))[0])))
    value = take(_U32.unpack(take(4))[0])
    return SpooledMessage(key, value, headers)


@dataclass(slots=True)
class SpoolStats:
    appended: int = 0
    replayed: int = 0
    dropped_full: int = 0
    refused_full: int = 0
    corrupt: int = 0


class DiskSpool:
    """Thread-safe segment spool; see the module docstring for the format and durability policy."""

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int = 512 * 1024 * 1024,
        segment_bytes: int = 8 * 1024 * 1024,
        fsync: FsyncPolicy = "roll",
        when_full: FullPolicy = "drop_oldest",
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.when_full = when_full
        self.stats = SpoolStats()
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)
        # A file object, so an abandoned spool releases its lock when it is garbage-collected.
        self._lock_file: IO[bytes] | None = (directory / ".lock").open("ab")
        try:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise SpoolLocked(f"spool {directory} is open in another process") from None
        existing = self._segments()
        self._next_seq = (int(existing[-1].stem.split("-")[1]) + 1) if existing else 0
        self._open: Path | None = None
        self._fh: object | None = None
        self._open_size = 0
        # Only this process writes here (the flock), so once a scan found no records none appear until append():
        # the publisher's background loop asks is_empty() on every pass, and a directory scan costs ~60 µs.
        self._known_empty = False

    # -- inspection ------------------------------------------------------------------------------------------
    def _segments(self) -> list[Path]:
        return sorted(self.directory.glob("seg-*.spool"))

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self._segments() if p.exists())

    def is_empty(self) -> bool:
        with self._lock:
            if not self._known_empty:
                self._known_empty = not any(p.stat().st_size for p in self._segments() if p.exists())
            return self._known_empty

    # -- writing ---------------------------------------------------------------------------------------------
    def append(self, msg: SpooledMessage) -> None:
        record = encode_record(msg)
        with self._lock:
            self._known_empty = False
            self._make_room(len(record))
            fh = self._writer()
            fh.write(record)  # type: ignore[attr-defined]
            fh.flush()  # type: ignore[attr-defined]
            if self.fsync == "always":
                os.fsync(fh.fileno())  # type: ignore[attr-defined]
            self._open_size += len(record)
            self.stats.appended += 1
            if self._open_size >= self.segment_bytes:
                self._roll()

    def _writer(self) -> object:
        if self._fh is None:
            self._open = self.directory / f"seg-{self._next_seq:012d}.spool"
            self._next_seq += 1
            self._fh = self._open.open("ab")
            self._open_size = self._open.stat().st_size
        return self._fh

    def _roll(self) -> None:
        if self._fh is not None:
            if self.fsync != "never":
                os.fsync(self._fh.fileno())  # type: ignore[attr-defined]
            self._fh.close()  # type: ignore[attr-defined]
        self._fh = None
        self._open = None
        self._open_size = 0

    def _make_room(self, incoming: int) -> None:
        total = self.size_bytes()
        while total + incoming > self.max_bytes:
            if self.when_full == "refuse_newest":
                self.stats.refused_full += 1
                raise SpoolFull(f"spool {self.directory} is at its cap of {self.max_bytes} bytes")
            closed = [p for p in self._segments() if p != self._open]
            victim = closed[0] if closed else None
            if victim is None:  # only the open segment is left: start over with it
                self._roll()
                victim = self._segments()[0]
            self.stats.dropped_full += sum(1 for _ in self._read_segment(victim))
            total -= victim.stat().st_size
            victim.unlink()

    # -- replay ----------------------------------------------------------------------------------------------
    def _read_segment(self, path: Path) -> Iterator[SpooledMessage]:
        data = path.read_bytes()
        pos = 0
        while pos + _HEAD.size <= len(data):
            length, crc = _HEAD.unpack_from(data, pos)
            payload = data[pos + _HEAD.size : pos + _HEAD.size + length]
            if len(payload) < length or zlib.crc32(payload) != crc:
                self.stats.corrupt += 1
                return
            pos += _HEAD.size + length
            try:
                yield decode_payload(payload)
            except ValueError:
                self.stats.corrupt += 1
                return
        if pos < len(data):
            self.stats.corrupt += 1  # a torn header at the tail

    def oldest_segment(self) -> tuple[Path, list[SpooledMessage]] | None:
        """The oldest segment and its records (rolling the open segment if it is the only one)."""
        with self._lock:
            segments = self._segments()
            if not segments:
                return None
            if segments[0] == self._open:
                self._roll()
            path = segments[0]
            return path, list(self._read_segment(path))

    def acknowledge(self, path: Path, count: int) -> None:
        """Every record of segment ``path`` reached the broker: delete it."""
        with self._lock:
            path.unlink(missing_ok=True)
            self.stats.replayed += count

    def close(self) -> None:
        """Fsync and close the open segment and release the directory. Idempotent."""
        with self._lock:
            self._roll()
            if self._lock_file is not None:
                self._lock_file.close()  # releases the flock
                self._lock_file = None


def spool_slots(base: Path) -> list[Path]:
    """Every slot directory under ``base`` that exists, ``base`` itself first."""
    slots = [base] if base.is_dir() else []
    numbered = [p for p in base.glob("slot-*") if p.is_dir() and p.name[5:].isdigit()] if slots else []
    return slots + sorted(numbered, key=lambda p: int(p.name[5:]))


def has_segments(directory: Path) -> bool:
    """Whether ``directory`` holds any non-empty segment (cheap: no lock, no reading)."""
    return any(p.stat().st_size for p in directory.glob("seg-*.spool") if p.exists())


def open_spool(base: Path, *, max_slots: int = 64, **options: Any) -> DiskSpool:
    """The first spool slot under ``base`` no other process holds (``base`` itself first).

    Why slots: several processes of one app (web workers) share one configured directory; each needs its own
    append-only files, and a restarted process should find its old records. Raises :class:`SpoolLocked` when all
    ``max_slots`` are taken.
    """
    for slot in range(max_slots):
        directory = base if slot == 0 else base / f"slot-{slot}"
        try:
            return DiskSpool(directory, **options)
        except SpoolLocked:
            continue
    raise SpoolLocked(f"all {max_slots} spool slots under {base} are in use")


class NoSpool:
    """Stands in when no spool directory can be opened (read-only disk, every slot taken) in lenient mode.

    The publisher keeps publishing while the broker is up; what it would have spooled is refused here and counted
    as lost (``spool_io``) instead of crashing the app at start-up.
    """

    directory: Path | None = None

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.stats = SpoolStats()

    def append(self, msg: SpooledMessage) -> None:
        raise OSError(f"no spool available: {self.reason}")

    def size_bytes(self) -> int:
        return 0

    def is_empty(self) -> bool:
        return True

    def oldest_segment(self) -> tuple[Path, list[SpooledMessage]] | None:
        return None

    def acknowledge(self, path: Path, count: int) -> None:
        return None

    def close(self) -> None:
        return None
