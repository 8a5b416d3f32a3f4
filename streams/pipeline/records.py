"""What the steps read and write: Kafka records as plain data, and the one producer interface they send through.

The steps take these instead of Faust's events so that they read (and test) without the framework; the Faust
adapter converts once per message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from costplane.publisher.codec import Headers


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed Kafka record. ``timestamp_ms`` is the record's own timestamp (producer create time or broker
    append time), None when the broker has none: every reader of the record sees the same value."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp_ms: int | None


class Outbox(Protocol):
    """The stream role's producer: records are sent in order and ``flush`` returns once all are acknowledged."""

    async def send(self, topic: str, key: bytes | None, value: bytes, headers: Headers | None = None) -> None: ...

    async def flush(self) -> None: ...
