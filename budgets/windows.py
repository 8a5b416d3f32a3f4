"""Which window a moment belongs to, per budget period — calendar windows in the budget's timezone, rolling ones
as a fixed number of buckets so sums stay exact and memory stays bounded.

| period | window | buckets |
|---|---|---|
| ``day`` | calendar day in ``tz`` (DST-correct) | 1 |
| ``month`` | calendar month in ``tz`` | 1 |
| ``rolling-1m`` | last minute | 12 × 5 s |
| ``rolling-1h`` | last hour | 60 × 1 min |
| ``rolling-24h`` | last 24 hours | 96 × 15 min |
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

ROLLING: dict[str, tuple[int, int]] = {  # period -> (bucket size ms, buckets per window)
    "rolling-1m": (5_000, 12),
    "rolling-1h": (60_000, 60),
    "rolling-24h": (900_000, 96),
}
CALENDAR = ("day", "month")
PERIODS = CALENDAR + tuple(ROLLING)


@dataclass(frozen=True, slots=True)
class Window:
    """A half-open interval [start_ms, end_ms) of UTC epoch milliseconds."""

    start_ms: int
    end_ms: int

    def contains(self, at_ms: int) -> bool:
        return self.start_ms <= at_ms < self.end_ms


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def window_for(period: str, tz: str, at_ms: int) -> Window:
    """The window of ``period`` that contains ``at_ms`` (for rolling periods: the window ending at its bucket)."""
    if period in ROLLING:
        size, count = ROLLING[period]
        bucket_end = (at_ms // size + 1) * size
        return Window(bucket_end - size * count, bucket_end)
    zone = ZoneInfo(tz)
    local = datetime.fromtimestamp(at_ms / 1000, tz=UTC).astimezone(zone)
    if period == "day":
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
        end = (start + timedelta(days=1, hours=3)).replace(hour=0)  # +3h survives a 23-h or 25-h DST day
        return Window(_ms(start.replace(tzinfo=zone)), _ms(end.replace(tzinfo=zone)))
    if period == "month":
        start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        nxt = (start.replace(day=28) + timedelta(days=4)).replace(day=1)
        return Window(_ms(start.replace(tzinfo=zone)), _ms(nxt.replace(tzinfo=zone)))
    raise ValueError(f"unknown period {period!r}; expected one of {', '.join(PERIODS)}")


def bucket_for(period: str, tz: str, at_ms: int) -> Window:
    """The counter bucket holding ``at_ms``: the whole window for calendar periods, one bucket for rolling ones."""
    if period in ROLLING:
        size, _count = ROLLING[period]
        start = at_ms // size * size
        return Window(start, start + size)
    return window_for(period, tz, at_ms)


def buckets_in_window(period: str, tz: str, at_ms: int) -> list[Window]:
    """Every bucket whose sum is the window's total at ``at_ms`` (one for calendar periods)."""
    if period not in ROLLING:
        return [window_for(period, tz, at_ms)]
    size, count = ROLLING[period]
    last = at_ms // size * size
    return [Window(last - i * size, last - i * size + size) for i in range(count - 1, -1, -1)]


class WindowCache:
    """Remembers the last calendar window per (period, tz), so hot loops skip the timezone arithmetic.

    ``window_for`` on a calendar period builds zoned datetimes (microseconds); almost every event of a batch falls
    in the window of the previous one. Hold one cache per loop or per worker (it keeps one window per period and
    timezone, so it stays tiny); results are identical to :func:`window_for` / :func:`bucket_for`.
    """

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], Window] = {}

    def window(self, period: str, tz: str, at_ms: int) -> Window:
        if period in ROLLING:
            return window_for(period, tz, at_ms)
        key = (period, tz)
        w = self._last.get(key)
        if w is None or not w.start_ms <= at_ms < w.end_ms:
            w = self._last[key] = window_for(period, tz, at_ms)
        return w

    def bucket(self, period: str, tz: str, at_ms: int) -> Window:
        if period in ROLLING:
            return bucket_for(period, tz, at_ms)
        return self.window(period, tz, at_ms)
