"""Window math shared by the guard and the worker: calendar windows in the budget's timezone tile time without
gaps or overlaps across DST changes, and rolling windows are exact runs of fixed buckets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from costplane.budgets import bucket_for, window_for
from costplane.budgets.windows import ROLLING, buckets_in_window

HOUR = 3_600_000


def local_ms(text: str, tz: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp() * 1000)


@pytest.mark.parametrize(
    ("tz", "day", "hours"),
    [
        ("Europe/Paris", "2026-03-29", 23),
        ("Europe/Paris", "2026-10-25", 25),
        ("Europe/Paris", "2026-06-01", 24),
        ("America/New_York", "2026-03-08", 23),
        ("America/New_York", "2026-11-01", 25),
        ("Australia/Lord_Howe", "2026-10-04", 23.5),
        ("Australia/Lord_Howe", "2026-04-05", 24.5),
        ("Asia/Kolkata", "2026-03-29", 24),
        ("UTC", "2026-03-29", 24),
    ],
)
def test_calendar_day_length_follows_dst(tz: str, day: str, hours: float) -> None:
    w = window_for("day", tz, local_ms(f"{day}T12:00:00", tz))
    assert w.start_ms == local_ms(f"{day}T00:00:00", tz)
    assert w.end_ms - w.start_ms == int(hours * HOUR)


def test_a_day_whose_midnight_does_not_exist_starts_when_the_day_does() -> None:
    # Chile moves its clocks from 24:00 to 01:00: the day begins at 01:00 local, which is the previous day's end.
    tz = "America/Santiago"
    w = window_for("day", tz, local_ms("2026-09-06T12:00:00", tz))
    before = window_for("day", tz, w.start_ms - 1)
    assert before.end_ms == w.start_ms and w.end_ms - w.start_ms == 23 * HOUR
    assert datetime.fromtimestamp(w.start_ms / 1000, ZoneInfo(tz)).hour == 1


@pytest.mark.parametrize("tz", ["Europe/Paris", "America/New_York", "Australia/Lord_Howe", "America/Santiago"])
@pytest.mark.parametrize("period", ["day", "month"])
def test_calendar_windows_tile_a_year_without_gaps(tz: str, period: str) -> None:
    at = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000)
    end = at + 400 * 24 * HOUR
    w = window_for(period, tz, at)
    count = 0
    while w.end_ms < end:
        nxt = window_for(period, tz, w.end_ms)
        assert nxt.start_ms == w.end_ms and window_for(period, tz, w.end_ms - 1) == w
        w, count = nxt, count + 1
    assert count >= (12 if period == "month" else 399)


def test_month_windows_in_a_timezone() -> None:
    tz = "Europe/Paris"
    # 23:30 UTC on 31 January is already February in Paris.
    at = int(datetime(2026, 1, 31, 23, 30, tzinfo=UTC).timestamp() * 1000)
    w = window_for("month", tz, at)
    assert (w.start_ms, w.end_ms) == (local_ms("2026-02-01T00:00:00", tz), local_ms("2026-03-01T00:00:00", tz))
    march = window_for("month", tz, local_ms("2026-03-15T00:00:00", tz))
    assert march.end_ms - march.start_ms == (31 * 24 - 1) * HOUR  # the spring-forward hour is missing


@pytest.mark.parametrize("period", sorted(ROLLING))
def test_rolling_buckets_slide_and_expire(period: str) -> None:
    size, count = ROLLING[period]
    at = 1_767_225_600_000 + 7 * size + 123
    first = buckets_in_window(period, "UTC", at)
    assert len(first) == count and all(b.end_ms - b.start_ms == size for b in first)
    assert all(a.end_ms == b.start_ms for a, b in zip(first, first[1:], strict=False))
    assert bucket_for(period, "UTC", at) == first[-1] and first[-1].contains(at)
    assert window_for(period, "UTC", at).start_ms == first[0].start_ms
    # One bucket later, the oldest bucket has expired and exactly one new one joined.
    later = buckets_in_window(period, "UTC", at + size)
    assert later[:-1] == first[1:] and first[0] not in later
    # The window is the same for every moment inside one bucket (a key per bucket is stable).
    assert window_for(period, "UTC", first[-1].start_ms) == window_for(period, "UTC", first[-1].end_ms - 1)
    assert window_for(period, "UTC", first[-1].end_ms).start_ms == first[1].start_ms


def test_rolling_24h_is_96_quarter_hours_and_ignores_the_timezone() -> None:
    at = local_ms("2026-10-25T02:30:00", "Europe/Paris")
    assert buckets_in_window("rolling-24h", "Europe/Paris", at) == buckets_in_window("rolling-24h", "UTC", at)
    w = window_for("rolling-24h", "Europe/Paris", at)
    assert w.end_ms - w.start_ms == 24 * HOUR and len(buckets_in_window("rolling-24h", "UTC", at)) == 96
    assert timedelta(milliseconds=ROLLING["rolling-1m"][0]) == timedelta(seconds=5)


def test_unknown_period_is_a_readable_error() -> None:
    with pytest.raises(ValueError, match="unknown period"):
        window_for("fortnight", "UTC", 0)


def test_window_cache_answers_exactly_like_window_for() -> None:
    from costplane.budgets import WindowCache

    cache = WindowCache()
    start = local_ms("2026-03-28T20:00:00", "Europe/Paris")
    for step in range(0, 60 * 3_600_000, 599_999):  # across the spring-forward night, odd steps
        for period in ("day", "month", "rolling-1m", "rolling-1h", "rolling-24h"):
            for tz in ("Europe/Paris", "America/Santiago"):
                assert cache.window(period, tz, start + step) == window_for(period, tz, start + step)
                assert cache.bucket(period, tz, start + step) == bucket_for(period, tz, start + step)
    # Going back in time (a late event) is answered right too.
    assert cache.window("day", "Europe/Paris", start) == window_for("day", "Europe/Paris", start)
