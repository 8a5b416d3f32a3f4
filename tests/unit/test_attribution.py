"""Attribution is exact (integer nano-USD), counts each event_id once, and separates failed-attempt spend."""

from __future__ import annotations

from decimal import Decimal

from costplane.attribution import attribute, nanos_to_usd, usd_display
from costplane.synthetic import TrafficShape, generate


def test_totals_are_exact_and_duplicates_count_once() -> None:
    events = list(generate(3000, seed=8, shape=TrafficShape(base_retry_rate=0.2)))
    priced = [(e, 1_000 + i, False) for i, e in enumerate(events)]
    duplicated = priced + priced[:500]  # redelivery of the first 500
    rows = attribute(duplicated, ("tenant",))
    assert sum(r.events for r in rows) == 3000
    assert sum(r.cost_nanos for r in rows) == sum(c for _e, c, _u in priced)
    failed = sum(c for e, c, _u in priced if e.status != "ok")
    assert sum(r.failed_cost_nanos for r in rows) == failed > 0
    assert [r.cost_nanos for r in rows] == sorted((r.cost_nanos for r in rows), reverse=True)


def test_money_strings() -> None:
    assert nanos_to_usd(1) == "1E-9" or Decimal(nanos_to_usd(1)) == Decimal("0.000000001")
    assert Decimal(nanos_to_usd(1_234_567_891)) == Decimal("1.234567891")
    assert usd_display(1_234_567_891) == "1.2346" and usd_display(0) == "0.0000"
