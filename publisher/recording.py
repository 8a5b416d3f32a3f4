"""``record`` and ``request`` over ``emit``: what UsagePublisher and InMemoryPublisher must do alike.

A test that swaps the real publisher for the in-memory one relies on both filling an event's defaults the same way
and recording a request's attempts the same way; keeping that logic in one place makes the two impossible to drift.
Each publisher keeps its own ``emit``, its own way of refusing a call with unknown fields, and its own handling of a
usage object of unknown shape.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from costplane.publisher.attempts import RequestRecorder
from costplane.publisher.event import UsageEvent


class EventRecording(ABC):
    """The keyword-field API built on a publisher's ``emit``."""

    strict: bool
    _clock: Callable[[], float]
    _new_id: Callable[[], str]

    @abstractmethod
    def emit(self, event: UsageEvent) -> bool: ...

    @abstractmethod
    def unrecognised_usage(self, shape: str, **context: Any) -> None: ...

    @abstractmethod
    def _refuse_bad_shape(self, detail: str) -> bool:
        """``record`` got fields the event does not have: raise ``InvalidEvent`` (strict) or note it, False."""

    def record(self, **fields: Any) -> bool:
        """Build and emit an event from keyword fields (schema names).

        ``event_id`` (UUIDv7) and ``occurred_at`` (now) are generated when absent; ``attempt`` defaults to 1,
        ``status`` to ``ok`` and ``request_id`` to the event_id (a request of one attempt).
        """
        try:
            if "event_id" not in fields:  # not setdefault: that would make an id even when one is given
                fields["event_id"] = self._new_id()
            fields.setdefault("request_id", fields["event_id"])
            if "occurred_at" not in fields:
                fields["occurred_at"] = int(self._clock() * 1000)
            fields.setdefault("attempt", 1)
            fields.setdefault("status", "ok")
            event = UsageEvent(**fields)
        except TypeError as exc:
            return self._refuse_bad_shape(str(exc))
        return self.emit(event)

    def request(self, **common: Any) -> RequestRecorder:
        """Record every attempt of one logical request: ``with pub.request(...) as req: with req.attempt(): …``."""
        return RequestRecorder(
            self.record, clock=self._clock, new_id=self._new_id, on_unrecognised=self.unrecognised_usage, **common
        )
