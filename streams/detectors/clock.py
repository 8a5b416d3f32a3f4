"""The detectors' event-time minute clock: which minute an event counts in, and which minutes are complete.

Pure: event times and the caller's ``now`` in, minute starts out. Why per closed minute of *event time*: a minute
is judged once all of it has arrived (``grace_ms`` after its end), so a slow batch cannot make a half-filled minute
look like a drop, and replays judge the same minutes the same way. Events for a minute already judged count in the
oldest minute still open.
"""

from __future__ import annotations

from collections.abc import Sequence

MINUTE_MS = 60_000
BACKLOG_PAUSE_MS = 30_000  # a backlog that pauses this long is over: the clock judges the minutes left


class MinuteClock:
    """The open minutes, the first minute not yet judged, and the watermark of a backlog being replayed."""

    def __init__(self) -> None:
        self.open: set[int] = set()  # minutes with events, not yet judged
        self.closed_until = 0  # start of the first minute not yet judged
        self._watermark = 0  # the latest batch's 90th-percentile event time (see place)
        self._observed = False  # events arrived since the last evaluation
        self._traffic_at = -BACKLOG_PAUSE_MS - 1  # the clock of the last evaluation that found new events

    def place(self, times: Sequence[int]) -> list[int]:
        """The minute each event time of a batch counts in (its own, or the oldest still open if that was judged).

        The watermark moves to the batch's 90th percentile, not its latest: during a replay the watermark closes
        minutes, and a few events from clients whose clocks run minutes ahead (within the skew bound) would close
        minutes the backlog has not reached yet, folding the rest of their traffic into a later minute. Not the
        median either: live traffic with a late majority (a publisher draining its spool) would look like a backlog.
        """
        if not times:
            return []
        closed = self.closed_until
        minutes = [max(t // MINUTE_MS * MINUTE_MS, closed) for t in times]
        self.open.update(minutes)
        self._observed = True
        ordered = sorted(times)
        self._watermark = max(self._watermark, ordered[(len(ordered) - 1) * 9 // 10])
        return minutes

    def due(self, now_ms: int, grace_ms: int) -> list[int]:
        """The minutes complete at ``now_ms``, oldest first; each must then be reported with :meth:`judged`.

        A minute is complete when it ended ``grace_ms`` before ``now_ms``. While the worker catches up on a
        backlog (events arrived within the last ``BACKLOG_PAUSE_MS`` but the watermark is more than two minutes
        behind ``now_ms``) the event time decides instead, so a replay is judged minute by minute as it advances.
        A short pause in the backlog (a rebalance, a slow batch, an evaluation between two batches) is not the end
        of it: judging by the clock then would close every open minute at once, half-filled ones included. Minutes
        without any traffic are due too (up to the last hour of them), so conditions clear and baselines decay
        when traffic stops.
        """
        horizon = now_ms - grace_ms
        if self._observed:
            self._traffic_at = now_ms
            self._observed = False
        if now_ms - self._watermark > 2 * MINUTE_MS and now_ms - self._traffic_at <= BACKLOG_PAUSE_MS:
            horizon = self._watermark
        last = horizon // MINUTE_MS * MINUTE_MS - MINUTE_MS  # start of the last complete minute
        first = self.closed_until or min(self.open, default=None)
        if first is None or last < first:
            return []
        quiet = range(max(first, last - 59 * MINUTE_MS), last + 1, MINUTE_MS)
        return sorted({m for m in self.open if m <= last} | set(quiet))

    def judged(self, minute: int) -> None:
        self.open.discard(minute)
        self.closed_until = max(self.closed_until, minute + MINUTE_MS)
