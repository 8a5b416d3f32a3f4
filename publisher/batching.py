"""Per-tenant batching, as pure logic: no threads, no I/O, the clock injected.

Why batches at all: the worker pays a fixed cost per Kafka message (~70 µs), so one event per message caps a worker
process near 13 k events/s while 50+ events per message reach ~96 k/s. A Kafka message carries one tenant's events
(it is keyed by tenant), so the publisher keeps one open batch per tenant and closes it when the first of these
happens:

* it holds ``max_events`` events;
* its encoded size reaches ``max_bytes`` (exact for encoded bodies, estimated for UsageEvents);
* ``linger_s`` has passed since its first event (a quiet tenant's events still leave within the linger).

Closed batches wait in a FIFO until the sender takes them. The batcher also keeps the memory bound: it reports when
the events or bytes held (open + closed) pass ``max_buffered_events`` / ``max_buffered_bytes``, and hands
out the oldest batches so the caller can move them out of RAM (to the broker or the spool).

Not thread-safe by itself: the publisher calls it under its own lock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from costplane.publisher.event import UsageEvent

#: Fixed part of an event's encoded size (numbers, union tags, the event_id), used before it is encoded.
_BASE_EVENT_BYTES = 96


def estimate_size(event: UsageEvent) -> int:
    """A cheap upper-ish estimate of the event's Avro size, good enough to bound batches and memory.

    Only the strings that are always present and the unbounded attribute map are measured; the optional strings are
    capped by validation, and the estimate errs on the large side for them through the base.
    """
    size = (
        _BASE_EVENT_BYTES
        + len(event.tenant)
        + len(event.provider)
        + len(event.model)
        + len(event.request_id)
        + len(event.feature or "")
        + len(event.user_id or "")
    )
    if event.attributes:
        size += sum(len(k) + len(v) + 4 for k, v in event.attributes.items())
    return size


@dataclass(slots=True)
class Batch:
    """Events of one tenant that travel in one Kafka message.

    ``events`` holds what was added: UsageEvents (:meth:`TenantBatcher.add`), or, from the publisher, each event's
    encoded Avro body (:meth:`TenantBatcher.add_encoded`), so that a flush only joins bytes.
    """

    tenant: str
    events: list[Any] = field(default_factory=list)
    size: int = 0  # encoded bytes (estimated for UsageEvents, exact for bodies)
    opened_at: float = 0.0


@dataclass(frozen=True, slots=True)
class BatchLimits:
    max_events: int = 100
    max_bytes: int = 256 * 1024
    linger_s: float = 0.020
    max_buffered_events: int = 100_000
    max_buffered_bytes: int = 64 * 1024 * 1024


class TenantBatcher:
    """Open batches per tenant plus a FIFO of closed ones; see the module docstring for the triggers."""

    def __init__(self, limits: BatchLimits, clock: Callable[[], float]) -> None:
        self.limits = limits
        self._clock = clock
        # Open batches in the order they opened (dict order: a closed tenant's next batch goes to the end), so
        # the sender finds the due ones, and the next deadline, at the front instead of scanning every tenant.
        self._open: dict[str, Batch] = {}
        self._closed: deque[Batch] = deque()
        self._max_events, self._max_bytes = limits.max_events, limits.max_bytes
        self._max_held, self._max_held_bytes = limits.max_buffered_events, limits.max_buffered_bytes
        self.buffered_events = 0
        self.buffered_bytes = 0
        self._taken = 0  # events handed out in batches; with those still held, every event ever added

    @property
    def accepted(self) -> int:
        """Events ever added: counted per batch taken rather than per event, which keeps the hot path short."""
        return self._taken + self.buffered_events

    def add(self, event: UsageEvent) -> bool:
        """Append ``event`` to its tenant's batch; see :meth:`add_encoded` for what True means."""
        return self.add_encoded(event.tenant, event, estimate_size(event))

    def add_encoded(self, tenant: str, item: Any, size: int) -> bool:
        """Append ``item`` (an event's encoded body, ``size`` bytes) to ``tenant``'s batch.

        True when the caller has something to do: a batch closed (wake the sender) or memory is past the bound
        (:attr:`over_limit`, move the oldest batch out). One answer keeps the common case to a single test.
        """
        batch = self._open.get(tenant)
        if batch is None:
            batch = self._open[tenant] = Batch(tenant, opened_at=self._clock())
            total = size
        elif (total := batch.size + size) > self._max_bytes:
            # Adding this event would pass the byte limit: close what is there, start afresh.
            self._close(batch)
            batch = self._open[tenant] = Batch(tenant, opened_at=self._clock())
            total = size
        events = batch.events
        events.append(item)
        batch.size = total
        self.buffered_events = held = self.buffered_events + 1
        self.buffered_bytes = held_bytes = self.buffered_bytes + size
        if len(events) >= self._max_events or total >= self._max_bytes:
            self._close(batch)
            return True
        return held >= self._max_held or held_bytes >= self._max_held_bytes  # over_limit, inline

    def _close(self, batch: Batch) -> None:
        del self._open[batch.tenant]
        self._closed.append(batch)

    @property
    def over_limit(self) -> bool:
        """More is held in memory than the bound allows."""
        return (
            self.buffered_events >= self.limits.max_buffered_events
            or self.buffered_bytes >= self.limits.max_buffered_bytes
        )

    def next_deadline(self) -> float | None:
        """When the oldest open batch lingers out (None when nothing is open)."""
        for batch in self._open.values():  # the first is the oldest
            return batch.opened_at + self.limits.linger_s
        return None

    def take_due(self, *, force: bool = False) -> list[Batch]:
        """Closed batches, oldest first, then open batches whose linger passed (all open ones when ``force``).

        Open batches are visited oldest first and the walk stops at the first one not yet due, so a sender that
        wakes often costs nothing per idle tenant. (A clock stepped backwards can only delay a batch by the step.)
        """
        now = self._clock()
        linger = self.limits.linger_s
        due = []
        for batch in self._open.values():
            if not force and now - batch.opened_at < linger:
                break
            due.append(batch)
        for batch in due:
            self._close(batch)
        return self._pop(len(self._closed))

    def take_oldest(self) -> list[Batch]:
        """One batch to move out of memory when over the bound: the oldest closed one, else the biggest open one."""
        if not self._closed and self._open:
            self._close(max(self._open.values(), key=lambda b: b.size))
        return self._pop(1)

    def _pop(self, n: int) -> list[Batch]:
        out = [self._closed.popleft() for _ in range(min(n, len(self._closed)))]
        for batch in out:
            self.buffered_events -= len(batch.events)
            self.buffered_bytes -= batch.size
            self._taken += len(batch.events)
        return out
