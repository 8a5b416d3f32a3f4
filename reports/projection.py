"""Where a month will end: month-to-date plus the recent daily run rate, with a range and the day a limit is crossed.

One pure function, :func:`project`, used by ``costplane forecast`` and by the worker's ``budget_forecast`` alert, so
the command and the alert never disagree. It takes the spend per local day (any unit: nano-USD or tokens) and the
moment of the forecast (an aware datetime: its timezone decides where days and the month begin), and reads no clock.

The run rate of a day still to come:

* with at least :data:`WEEKDAY_AFTER_DAYS` complete days of history, the mean of the same weekday over the last
  :data:`LOOKBACK_DAYS` days (so a quiet weekend is projected as a weekend) — basis ``weekday``;
* with fewer, the mean of the last :data:`RECENT_DAYS` complete days (or as many as there are) — ``recent_days``;
* with none (the first day of data), today's spend so far extrapolated to the whole day — ``today``.

History starts at the first day with spend within the look-back; a day without spend after it counts as zero.
The rest of today is the rate of today's weekday times the share of the day still ahead. ``low`` and ``high``
project with the smallest and the largest of the same samples instead of their mean (with the ``today`` basis there
is one sample, so all three agree). Totals are exact fractions until rounded half-even once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from fractions import Fraction
from typing import Literal

from costplane.pricing.cost import round_half_even

RECENT_DAYS = 7
WEEKDAY_AFTER_DAYS = 14
LOOKBACK_DAYS = 28
_MS = timedelta(milliseconds=1)

Basis = Literal["weekday", "recent_days", "today"]


@dataclass(frozen=True, slots=True)
class Projection:
    """A month's projection in the unit of the daily amounts given (JSON keys in docs/forecast.md)."""

    month_start: date
    month_end: date  # the month's last day
    month_to_date: int
    projected: int
    low: int
    high: int
    limit: int | None
    cross_date: date | None  # when ``projected`` reaches ``limit``: the day the running total reaches it
    basis: Basis
    history_days: int  # complete days the rate was learnt from (before today, within the look-back)

    @property
    def overrun(self) -> bool:
        return self.limit is not None and self.projected >= self.limit


def _ms(moment: datetime) -> int:
    return (moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // _MS


def _midnight(day: date, now: datetime) -> datetime:
    return datetime.combine(day, time(), now.tzinfo)


def month_bounds(now: datetime) -> tuple[date, date]:
    """The first and the last day of the month of ``now`` (in its timezone)."""
    first = now.date().replace(day=1)
    nxt = (first + timedelta(days=32)).replace(day=1)
    return first, nxt - timedelta(days=1)


def history_start(now: datetime) -> date:
    """The first day whose spend the projection may read: the look-back before today, or the month start."""
    return min(now.date() - timedelta(days=LOOKBACK_DAYS), month_bounds(now)[0])


def _rates(
    daily: Mapping[date, int], today: date, elapsed: Fraction
) -> tuple[Callable[[date], tuple[Fraction, Fraction, Fraction]], Basis, int]:
    """``rate(day) → (mean, low, high)`` per whole day, the basis, and the complete days of history."""
    earliest = today - timedelta(days=LOOKBACK_DAYS)
    spent_days = [d for d, v in daily.items() if v and earliest <= d < today]
    history = (today - min(spent_days)).days if spent_days else 0
    complete = [today - timedelta(days=i) for i in range(history, 0, -1)]
    if history == 0:
        # only today: what today spent so far, spread over the part of the day gone by
        whole = Fraction(daily.get(today, 0)) / elapsed if elapsed else Fraction(0)
        return (lambda _day: (whole, whole, whole)), "today", 0

    def stats(days: list[date]) -> tuple[Fraction, Fraction, Fraction]:
        values = [daily.get(d, 0) for d in days]
        return Fraction(sum(values), len(values)), Fraction(min(values)), Fraction(max(values))

    if history >= WEEKDAY_AFTER_DAYS:
        by_weekday = {w: stats([d for d in complete if d.weekday() == w]) for w in range(7)}
        return (lambda day: by_weekday[day.weekday()]), "weekday", history
    recent = stats(complete[-RECENT_DAYS:])
    return (lambda _day: recent), "recent_days", history


def project(daily: Mapping[date, int], now: datetime, limit: int | None = None) -> Projection:
    """The month-end projection at ``now`` from the amount spent per local day (days after ``now`` are ignored)."""
    if now.tzinfo is None:
        raise ValueError("project() needs an aware datetime: its timezone decides where days begin")
    today = now.date()
    first, last = month_bounds(now)
    start_ms, end_ms = _ms(_midnight(today, now)), _ms(_midnight(today + timedelta(days=1), now))
    elapsed = Fraction(_ms(now) - start_ms, end_ms - start_ms)
    rate, basis, history = _rates(daily, today, elapsed)
    mtd = sum(v for d, v in daily.items() if first <= d <= today)
    ahead = [today + timedelta(days=i) for i in range(1, (last - today).days + 1)]
    totals = []
    for which in range(3):  # mean, low, high
        rest = rate(today)[which] * (1 - elapsed) + sum((rate(d)[which] for d in ahead), Fraction(0))
        totals.append(mtd + rest)
    projected, low, high = (round_half_even(t.numerator, t.denominator) for t in totals)
    cross = None
    if limit is not None and projected >= limit:
        cross = _cross_date(
            daily, first, today, last, limit, rate(today)[0] * (1 - elapsed), {d: rate(d)[0] for d in ahead}
        )
    return Projection(first, last, mtd, projected, low, high, limit, cross, basis, history)


def _cross_date(
    daily: Mapping[date, int],
    first: date,
    today: date,
    last: date,
    limit: int,
    rest_of_today: Fraction,
    ahead: Mapping[date, Fraction],
) -> date:
    """The first day the running total reaches ``limit``: among the days gone by, today, or the days projected."""
    running = Fraction(0)
    day = first
    while day < today:
        running += daily.get(day, 0)
        if running >= limit:
            return day
        day += timedelta(days=1)
    running += daily.get(today, 0) + rest_of_today
    if running >= limit:
        return today
    for day, amount in sorted(ahead.items()):
        running += amount
        if running >= limit:
            return day
    return last  # the projection reached the limit only by its rounding to a whole unit
