"""A usage event after pricing: what every stage after the decoder works with."""

from __future__ import annotations

from dataclasses import dataclass

from costplane.publisher.event import UsageEvent


@dataclass(slots=True, frozen=True)
class PricedEvent:
    """A validated UsageEvent with its exact cost.

    ``cost_nanos`` is the event's cost rounded once (half-even) to integer nano-USD; every later sum is an integer
    sum of these. ``unpriced`` is True when the catalog had no price for the model (then ``cost_nanos`` is 0 and the
    event is still counted, flagged, never dropped). ``price_version`` names the catalog version used, so history
    can be re-rated.
    """

    event: UsageEvent
    cost_nanos: int
    price_version: str
    unpriced: bool = False

    @property
    def is_retry(self) -> bool:
        return self.event.attempt > 1

    @property
    def is_failed(self) -> bool:
        return self.event.status != "ok"
