"""The month-end projection with an injected clock: month-to-date, run rate, range and the crossing day.

Amounts are plain integers (the function is unit-agnostic); every expected number is worked out in the comments.
November 2026 starts on a Sunday and has 30 days.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from costplane.reports.projection import project


def days(start: date, values: list[int]) -> dict[date, int]:
    return {start + timedelta(days=i): v for i, v in enumerate(values)}


def test_recent_days_rate_range_and_cross_date() -> None:
    # Nov 1–2: 10 each; Nov 3–9: 8, 12, 10, 10, 6, 14, 10 (mean 10, min 6, max 14); today Nov 10 so far: 4.
    daily = days(date(2026, 11, 1), [10, 10, 8, 12, 10, 10, 6, 14, 10, 4])
    now = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)  # half of today is still ahead
    p = project(daily, now, limit=250)
    assert p.basis == "recent_days" and p.history_days == 9
    assert (p.month_start, p.month_end) == (date(2026, 11, 1), date(2026, 11, 30))
    assert p.month_to_date == 94  # 20 + 70 + 4
    # rest of today: 10 × 1/2 = 5; Nov 11–30: 20 days × 10 = 200
    assert p.projected == 94 + 5 + 200 == 299
    assert p.low == 94 + 3 + 120 == 217  # the smallest day, 6
    assert p.high == 94 + 7 + 280 == 381  # the largest day, 14
    # running total: 90 by Nov 9, 99 by the end of today, +10 a day: 249 on Nov 25, 259 on Nov 26
    assert p.cross_date == date(2026, 11, 26)
    assert p.overrun


def test_no_cross_date_below_the_limit() -> None:
    daily = days(date(2026, 11, 1), [10, 10, 8, 12, 10, 10, 6, 14, 10, 4])
    p = project(daily, datetime(2026, 11, 10, 12, 0, tzinfo=UTC), limit=300)
    assert p.projected == 299 and p.cross_date is None and not p.overrun


def test_weekday_aware_after_two_weeks() -> None:
    # 28 days of history, Oct 23 – Nov 19: weekdays 80 before Nov 6 and 120 from then on (each weekday: two 80s
    # and two 120s: mean 100, low 80, high 120); weekends 20 always. Today, Friday Nov 20, 30 so far at 06:00.
    def spend(d: date) -> int:
        if d.weekday() >= 5:
            return 20
        return 120 if d >= date(2026, 11, 6) else 80

    daily = {date(2026, 10, 23) + timedelta(days=i): spend(date(2026, 10, 23) + timedelta(days=i)) for i in range(28)}
    daily[date(2026, 11, 20)] = 30
    now = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)
    p = project(daily, now, limit=2000)
    assert p.basis == "weekday" and p.history_days == 28
    # Nov 1–19: 5 weekend days × 20 + Nov 2–5 4 × 80 + 10 weekdays from Nov 6 × 120 = 100 + 320 + 1200; + today 30
    assert p.month_to_date == 1650
    # rest of Friday: 3/4 × (100 | 80 | 120); Nov 21–30: 4 weekend days × 20 + 6 weekdays × (100 | 80 | 120)
    assert p.projected == 1650 + 75 + 80 + 600 == 2405
    assert p.low == 1650 + 60 + 80 + 480 == 2270
    assert p.high == 1650 + 90 + 80 + 720 == 2540
    # 1620 by Nov 19, 1725 by the end of today; Sat 1745, Sun 1765, Mon 1865, Tue 1965, Wed Nov 25 2065
    assert p.cross_date == date(2026, 11, 25)


def test_first_day_of_data_extrapolates_today_on_a_25_hour_day() -> None:
    # New York leaves daylight saving time on Nov 1 2026: that day has 25 hours, and 12.5 of them are gone at
    # 11:30 local (1:00–2:00 happens twice): 50 so far makes 100 for the whole day, 50 of it still ahead; then
    # 29 days × 100.
    zone = ZoneInfo("America/New_York")
    now = datetime(2026, 11, 1, 11, 30, tzinfo=zone)
    p = project({date(2026, 11, 1): 50}, now)
    assert p.basis == "today" and p.history_days == 0
    assert p.projected == p.low == p.high == 50 + 50 + 2900 == 3000
    assert p.limit is None and p.cross_date is None


def test_already_crossed_names_the_day_it_happened() -> None:
    daily = days(date(2026, 11, 1), [20, 20, 20, 20, 20])  # today Nov 5
    p = project(daily, datetime(2026, 11, 5, 18, 0, tzinfo=UTC), limit=50)
    assert p.cross_date == date(2026, 11, 3)  # 20, 40, 60


def test_spend_of_last_month_feeds_the_rate_not_the_month_to_date() -> None:
    # Oct 29–31: 30 a day; today Nov 1 at 00:00 nothing yet: the rate is 30 for all 30 days of November.
    daily = days(date(2026, 10, 29), [30, 30, 30])
    p = project(daily, datetime(2026, 11, 1, 0, 0, tzinfo=UTC))
    assert p.month_to_date == 0
    assert p.basis == "recent_days" and p.history_days == 3
    assert p.projected == 30 * 30 == 900


def test_rounds_half_even_once() -> None:
    # one complete day of 1; today Nov 2 at 12:00. The rate is 1 a day: half of today and Nov 3–30 (28 days) ahead.
    p = project({date(2026, 11, 1): 1}, datetime(2026, 11, 2, 12, 0, tzinfo=UTC))
    assert p.projected == 30  # 1 + 0.5 + 28 = 29.5 → 30 (even)
    p = project({date(2026, 11, 1): 1, date(2026, 11, 2): 1}, datetime(2026, 11, 2, 12, 0, tzinfo=UTC))
    assert p.projected == 30  # 2 + 0.5 + 28 = 30.5 → 30 (even)


def test_needs_an_aware_clock() -> None:
    with pytest.raises(ValueError, match="aware"):
        project({}, datetime(2026, 11, 2, 12, 0))
