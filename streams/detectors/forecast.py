"""budget_forecast: a monthly budget member's month-end projection crosses its limit.

The projection is :func:`costplane.reports.projection.project` (the same as ``costplane forecast``) at the end of
the judged minute, in the budget's timezone, over spend per local day: the month so far and the projection's
look-back before it. That month-to-date is the state worth saving — a restarted worker would otherwise forecast
from the days since it started.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from costplane.budgets import Budget, WindowCache, window_for
from costplane.budgets.model import event_attrs
from costplane.reports.projection import LOOKBACK_DAYS, Projection, history_start, project
from costplane.streams.core.findings import Finding
from costplane.streams.core.priced import PricedEvent
from costplane.streams.detectors.base import MINUTE_MS, Context, Verdict, finding, ratio, tokens_of
from costplane.streams.detectors.config import DetectorConfig

#: Days of spend kept per monthly budget member: a whole month and the projection's look-back before it.
MONTH_DAYS_KEPT = LOOKBACK_DAYS + 33
ACTION = (
    "Find what grew this month (costplane report spend --by feature,model --since the month start) "
    "and raise the budget or cut the growth before the crossing date."
)

MemberKey = tuple[str, str]  # (budget id, member)


def member_tenant(member: str) -> str:
    """The tenant of a budget member key (``tenant=acme,user=u1`` → ``acme``: the tenant always comes first)."""
    return member.split(",", 1)[0].removeprefix("tenant=")


class Forecast:
    """Spend per monthly budget member and local day (the budget's timezone)."""

    counts_events = True

    def __init__(self, windows: WindowCache) -> None:
        self.windows = windows
        self.budgets: list[Budget] = []
        self.monthly: list[Budget] = []  # the month budgets events are counted for (no wildcard members)
        self.months: dict[MemberKey, dict[int, int]] = {}  # -> {local day start ms: spent}

    def set_budgets(self, budgets: Iterable[Budget]) -> None:
        """Replace the budgets; the days of a monthly budget that is gone are dropped."""
        self.budgets = list(budgets)
        self.monthly = [b for b in self.budgets if b.period == "month" and "*" not in b.scope.values()]
        keep = {b.id for b in self.budgets if b.period == "month"}
        for key in [k for k in self.months if k[0] not in keep]:
            del self.months[key]

    def seed(self, budget_id: str, member: str, spent: int, at_ms: int) -> None:
        """Start a monthly budget's month-to-date from a total known without its days (e.g. the worker's window
        counter): spread evenly over the month's days before ``at_ms``'s day (the remainder on the first), which is
        the linear run rate a total alone implies; replaces what was counted for the member."""
        budget = next((b for b in self.budgets if b.id == budget_id), None)
        if budget is None or budget.period != "month":
            return
        month = window_for("month", budget.tz, at_ms)
        days: list[int] = []
        day = window_for("day", budget.tz, month.start_ms)
        today = window_for("day", budget.tz, at_ms).start_ms
        while day.start_ms < today:
            days.append(day.start_ms)
            day = window_for("day", budget.tz, day.end_ms)
        if not days:
            self.months[(budget_id, member)] = {today: int(spent)}
            return
        share, rest = divmod(int(spent), len(days))
        self.months[(budget_id, member)] = {d: share + (rest if i == 0 else 0) for i, d in enumerate(days)}

    def observe(self, event: PricedEvent, minute: int, config: DetectorConfig) -> None:
        """Spend per member and local day: the month so far and, for the run rate, the days before it (trimmed to
        the projection's look-back when judged)."""
        if not self.monthly:
            return
        attrs = event_attrs(event.event)
        for b in self.monthly:
            member = b.member_of(attrs)
            if member is None:
                continue
            day = self.windows.window("day", b.tz, event.event.occurred_at).start_ms
            cell = self.months.setdefault((b.id, member), {})
            if day not in cell:
                cell[day] = 0
                while len(cell) > MONTH_DAYS_KEPT:  # a new day (once a day per member): drop the oldest
                    del cell[min(cell)]
            cell[day] += event.cost_nanos if b.unit == "usd" else tokens_of(event)

    def judge(self, minute: int, context: Context) -> list[Finding]:
        out: list[Finding] = []
        by_id = {b.id: b for b in self.budgets}
        for (budget_id, member), days in self.months.items():
            b = by_id.get(budget_id)
            if b is None or b.period != "month":
                continue  # restored from saved state before the budgets arrived
            f = self._judge_member(b, member, days, minute, context)
            if f is not None:
                out.append(f)
        return out

    def _judge_member(
        self, b: Budget, member: str, days: Mapping[int, int], minute: int, context: Context
    ) -> Finding | None:
        end = minute + MINUTE_MS
        w = window_for("month", b.tz, minute)
        tenant = b.scope.get("tenant", "")
        if end - w.start_ms < context.config_for(tenant).forecast_min_elapsed_ms:
            return None
        zone = ZoneInfo(b.tz)
        now = datetime.fromtimestamp(end / 1000, tz=UTC).astimezone(zone)
        first = history_start(now)
        daily: dict[date, int] = {}
        for start, amount in days.items():
            if start >= end:
                continue  # a day after the judged minute (a replay judging the past): not yet
            local = datetime.fromtimestamp(start / 1000, tz=UTC).astimezone(zone).date()
            if local >= first:
                daily[local] = daily.get(local, 0) + amount
        p = project(daily, now, b.limit)
        if p.month_to_date <= 0:
            return None
        labels = {"budget_id": b.id, "member": member}
        return finding("budget_forecast", tenant, labels, w.start_ms, w.end_ms, _verdict(b, member, p, w.end_ms))

    def save(self) -> dict[str, list[Any]]:
        return {
            "months": [
                [[member_tenant(member), budget_id, member], {str(d): v for d, v in days.items()}]
                for (budget_id, member), days in self.months.items()
            ]
        }

    def load(self, data: Mapping[str, Any]) -> None:
        for (_tenant, budget_id, member), saved in data.get("months", []):
            # Kept even for a budget not known yet (the budgets topic may be read after the state): judged once
            # it is, dropped by set_budgets when it is gone. Added, not kept: what this process counted since it
            # started is traffic the saved state never saw.
            cell = self.months.setdefault((budget_id, member), {})
            for day, amount in saved.items():
                cell[int(day)] = cell.get(int(day), 0) + int(amount)

    def forget(self, tenant: str) -> None:
        for key in [k for k in self.months if k[1] == f"tenant={tenant}" or k[1].startswith(f"tenant={tenant},")]:
            del self.months[key]

    def tracked(self) -> dict[str, int]:
        return {"months": len(self.months)}


def _verdict(b: Budget, member: str, p: Projection, month_end_ms: int) -> Verdict:
    crossing = p.cross_date.isoformat() if p.cross_date is not None else ""
    return Verdict(
        p.overrun,
        "warning",
        f"budget {b.id} ({member}) projected at {p.projected} of {b.limit} {b.unit} by month end"
        + (f", reaching it on {crossing}" if crossing else ""),
        {
            "spent": str(p.month_to_date),
            "limit": str(b.limit),
            "unit": b.unit,
            "projected": str(p.projected),
            "low": str(p.low),
            "high": str(p.high),
            "projected_share": ratio(p.projected, b.limit),
            "basis": p.basis,
            "crossing_date": crossing,
            "month_end_ms": str(month_end_ms),
        },
        (),
        ACTION,
    )
