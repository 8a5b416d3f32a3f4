"""The ``budget_forecast`` finding: the projection of ``costplane forecast``, from spend per day that the worker's
saved state carries across a restart (amounts in USD below; October 2026 has 31 days)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from costplane.budgets import Budget
from costplane.publisher.event import UsageEvent
from costplane.streams.core.findings import Finding
from costplane.streams.core.priced import PricedEvent
from costplane.streams.detectors import MINUTE_MS, Detectors

OCT1 = int(datetime(2026, 10, 1, tzinfo=UTC).timestamp() * 1000)
DAY = 86_400_000
HOUR = 3_600_000
USD = 10**9
BUDGET = Budget.from_cli("acme-month", scope="tenant=acme", period="month", limit_usd="400", action="notify")


def spend(at_ms: int, usd: int) -> PricedEvent:
    e = UsageEvent(
        event_id=str(uuid.uuid4()),
        occurred_at=at_ms,
        tenant="acme",
        provider="openai",
        model="gpt-4o",
        request_id=str(uuid.uuid4()),
        attempt=1,
        status="ok",
        output_tokens=1,
    )
    return PricedEvent(e, usd * USD, "test")


def judge(det: Detectors, events: list[PricedEvent], minute: int) -> list[Finding]:
    """Observe, then judge every minute up to ``minute`` (inclusive); the findings of ``minute``."""
    det.observe(events)
    return dict(det.evaluate_minutes(minute + MINUTE_MS + 6_000)).get(minute, [])


def forecast(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.kind == "budget_forecast"]


def first_nine_days() -> list[PricedEvent]:
    return [spend(OCT1 + d * DAY + 9 * HOUR, 10) for d in range(9)]  # Oct 1–9, 10 a day at 09:00


def test_projection_numbers_and_crossing_day() -> None:
    det = Detectors(budgets=[BUDGET])
    oct10 = OCT1 + 9 * DAY + 9 * HOUR
    findings = forecast(judge(det, [*first_nine_days(), *(spend(oct10, 10) for _ in range(20))], oct10))
    assert len(findings) == 1 and findings[0].active
    n = findings[0].numbers
    # 290 so far; 10 a day (Oct 3–9); at 09:01, 899/1440 of Oct 10 ahead, then Oct 11–31 (21 days):
    # 290 + 6.243055… + 210 = 506.243055… → 506 243 055 556 nano-USD (half-even)
    assert n["spent"] == str(290 * USD)
    assert n["projected"] == "506243055556" == n["low"] == n["high"]
    assert n["basis"] == "recent_days"
    # 296.24 by the end of Oct 10, +10 a day: 396.24 on Oct 20, 406.24 on Oct 21
    assert n["crossing_date"] == "2026-10-21"
    assert n["projected_share"] == "1.2656"  # 506.243 / 400, to four places


def test_restored_days_continue_the_month_after_a_restart() -> None:
    before = Detectors(budgets=[BUDGET])
    last = OCT1 + 8 * DAY + 9 * HOUR
    assert not [f for f in forecast(judge(before, first_nine_days(), last)) if f.active]  # ≈ 316 of 400
    saved = json.loads(json.dumps(before.baselines()))  # as the worker writes it to Redis
    assert saved["months"] == [
        [["acme", "acme-month", "tenant=acme"], {str(OCT1 + d * DAY): 10 * USD for d in range(9)}]
    ]

    after = Detectors(budgets=[BUDGET])
    oct10 = OCT1 + 9 * DAY + 9 * HOUR
    after.observe([spend(oct10, 10) for _ in range(20)])  # counted before the saved state is loaded
    after.load_baselines(saved)
    findings = forecast(judge(after, [], oct10))
    assert len(findings) == 1 and findings[0].active
    assert findings[0].numbers["spent"] == str(290 * USD)
    assert findings[0].numbers["projected"] == "506243055556"

    # Without the saved days the month would restart at 200 with a rate guessed from 9 hours of one day.
    fresh = Detectors(budgets=[BUDGET])
    lone = forecast(judge(fresh, [spend(oct10, 10) for _ in range(20)], oct10))
    assert lone[0].numbers["spent"] == str(200 * USD) and lone[0].numbers["basis"] == "today"


def test_saved_month_of_a_budget_not_known_yet_waits_for_it() -> None:
    saved = {"months": [[["acme", "acme-month", "tenant=acme"], {str(OCT1): 10 * USD}]]}
    det = Detectors()
    det.load_baselines(saved)
    assert not forecast(judge(det, [], OCT1 + 2 * DAY))
    det.set_budgets([BUDGET])
    assert det.tracked()["months"] == 1
    det.set_budgets([])
    assert det.tracked()["months"] == 0
