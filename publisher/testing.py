"""Test helpers for code that reports usage: ``InMemoryPublisher`` and the ``usage_event`` factory.

``InMemoryPublisher`` is the publisher's API without Kafka: it validates exactly like the real one (lenient by
default, ``strict=True`` raises) and keeps every accepted event in ``.events`` so a test can assert what the code
under test reported. ``usage_event`` builds one valid event from a few named fields, so a test states only the
fields it is about.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from costplane.publisher.event import UsageEvent
from costplane.publisher.ids import UUIDv7Source
from costplane.publisher.recording import EventRecording
from costplane.publisher.validation import InvalidEvent, validate_event


def usage_event(**fields: Any) -> UsageEvent:
    """A valid UsageEvent: ``fields`` over these defaults — fresh random UUIDs as ``event_id`` and
    ``request_id``, the current time as ``occurred_at``, tenant ``acme``, ``openai``/``gpt-4o-mini``, attempt 1,
    status ``ok``, and the dataclass's own defaults (no tokens, no attribution) for the rest."""
    defaults: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "occurred_at": int(time.time() * 1000),
        "tenant": "acme",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "request_id": str(uuid.uuid4()),
        "attempt": 1,
        "status": "ok",
    }
    return UsageEvent(**{**defaults, **fields})


class InMemoryPublisher(EventRecording):
    """Collects events in memory; same ``emit``/``record``/``request``/``flush``/``close`` as UsagePublisher."""

    def __init__(self, *, strict: bool = False, clock: Callable[[], float] = time.time) -> None:
        self.strict = strict
        self.events: list[UsageEvent] = []
        self.rejected: list[InvalidEvent] = []
        self._clock = clock
        self._new_id = UUIDv7Source()
        self._lock = threading.Lock()
        self.closed = False
        #: Shapes of the usage objects :meth:`unrecognised_usage` was told about, in order.
        self.unrecognised: list[str] = []

    def emit(self, event: UsageEvent) -> bool:
        try:
            validate_event(event)
        except InvalidEvent as exc:
            if self.strict:
                raise
            self.rejected.append(exc)
            return False
        if self.closed:  # as the real publisher: nothing is accepted after close()
            if self.strict:
                raise RuntimeError("emit() after close()")
            return False
        with self._lock:
            self.events.append(event)
        return True

    def _refuse_bad_shape(self, detail: str) -> bool:
        if self.strict:
            raise InvalidEvent("bad_shape", None, detail) from None
        self.rejected.append(InvalidEvent("bad_shape", None, detail))
        return False

    def unrecognised_usage(self, shape: str, **context: Any) -> None:
        """Kept in ``.unrecognised`` (the real publisher counts and logs it)."""
        with self._lock:
            self.unrecognised.append(shape)

    def flush(self, timeout: float = 0.0) -> int:
        return 0

    def stats(self) -> dict[str, Any]:
        """The same keys as ``UsagePublisher.stats()``; nothing is ever buffered or spooled here."""
        with self._lock:
            emitted = len(self.events)
        return {"buffered": 0, "broker_up": True, "spool_bytes": 0, "emitted": emitted, "rejected": len(self.rejected)}

    def close(self, timeout: float | None = None) -> None:
        self.closed = True

    def __enter__(self) -> InMemoryPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
