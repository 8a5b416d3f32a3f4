"""The detectors' minute clock on its own: which minute an event counts in and which minutes are complete, from
event times and an injected ``now`` only."""

from __future__ import annotations

from costplane.streams.detectors.clock import BACKLOG_PAUSE_MS, MINUTE_MS, MinuteClock

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a minute boundary
GRACE = 5_000


def test_live_minutes_close_grace_after_their_end_and_late_events_join_the_oldest_open_minute() -> None:
    clock = MinuteClock()
    assert clock.place([T0 + 1_000, T0 + 59_999, T0 + MINUTE_MS + 1]) == [T0, T0, T0 + MINUTE_MS]
    assert clock.due(T0 + MINUTE_MS + GRACE - 1, GRACE) == []  # minute 0 ended, its grace has not
    assert clock.due(T0 + MINUTE_MS + GRACE, GRACE) == [T0]
    clock.judged(T0)
    assert clock.place([T0 + 30_000]) == [T0 + MINUTE_MS]  # minute 0 was judged: counted in minute 1
    assert clock.open == {T0 + MINUTE_MS}


def test_a_quiet_stretch_is_judged_minute_by_minute_up_to_the_last_hour() -> None:
    clock = MinuteClock()
    clock.place([T0])
    clock.due(T0 + MINUTE_MS + GRACE, GRACE)
    clock.judged(T0)
    now = T0 + 100 * MINUTE_MS + GRACE  # 99 quiet minutes later (and more than the backlog pause)
    due = clock.due(now, GRACE)
    assert due == [T0 + m * MINUTE_MS for m in range(40, 100)]  # the last 60 complete minutes, in order


def test_a_backlog_is_judged_by_event_time_while_it_arrives_and_by_the_clock_once_it_stops() -> None:
    clock = MinuteClock()
    now = T0 + 60 * MINUTE_MS  # the backlog is an hour behind the clock
    # 15 events over seconds 0-140: the batch's 90th percentile (the 13th of 15) is second 120, in minute 2.
    clock.place([T0 + s * 1_000 for s in range(0, 150, 10)])
    assert clock.due(now, GRACE) == [T0, T0 + MINUTE_MS]  # the minutes event time has passed; minute 2 stays open
    clock.judged(T0)
    clock.judged(T0 + MINUTE_MS)
    assert clock.due(now + BACKLOG_PAUSE_MS, GRACE) == []  # a pause no longer than the limit: still event time
    # Quiet for longer than the pause: the backlog is over and the clock judges minute 2 and the quiet ones after.
    due = clock.due(now + BACKLOG_PAUSE_MS + 1, GRACE)
    assert due == [T0 + m * MINUTE_MS for m in range(2, 60)]
